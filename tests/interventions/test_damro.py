"""DAMRO: the official computation (merged-head CLS attention, the shorter top-k-ordered sequence), the
mask variant (columns hidden in place), the contrast."""
import pytest
import torch

import halluc
from halluc.engine.views import ORIGINAL, Branch, build_view_batch, qualified_view
from halluc.errors import HallucError
from halluc.interventions import attach
from halluc.interventions.damro import DAMRO, compacted_positions, hidden_bias, outlier_columns
from tests.helpers import PROMPTS, combiner_for, make_session


def test_top_k_per_image_and_column_mask_on_hand_made_attention():
    cls = torch.tensor([[0.1, 0.5, 0.05, 0.3, 0.05, 0.0, 0.9, 0.2]])  # one row, two 4-token images
    positions = [[torch.tensor([2, 3, 4, 5]), torch.tensor([7, 8, 9, 10])]]
    keep = outlier_columns(cls, positions, k=2, width=12)
    assert keep[0].nonzero().flatten().tolist() == [3, 5, 9, 10]  # top-2 of each image
    image = torch.zeros(1, 12, dtype=torch.bool)
    image[0, [2, 3, 4, 5, 7, 8, 9, 10]] = True
    bias = hidden_bias(image, keep)
    assert torch.isinf(bias[0, [2, 4, 7, 8]]).all() and (bias[0, [2, 4, 7, 8]] < 0).all()
    assert (bias[0, [0, 1, 3, 5, 6, 9, 10, 11]] == 0).all()  # text and the outliers stay visible
    assert outlier_columns(cls, positions, k=10, width=12).sum() == 8  # k beyond the image: all of it


def test_contrast_and_cutoff_formula():
    method = DAMRO(alpha=2.0, beta=0.5)
    combiner = combiner_for(method, ["outliers"])
    original, outliers = torch.tensor([[2.0, 1.8, -1.0]]), torch.tensor([[0.0, 3.0, 0.0]])
    out = combiner(None, torch.cat([original, outliers]))
    lo, ln = original.log_softmax(-1), outliers.log_softmax(-1)
    expected = (3 * lo - 2 * ln).masked_fill(lo < lo.max() + torch.tensor(0.5).log(), float("-inf"))
    torch.testing.assert_close(out[:1], expected)
    assert out[0].argmax() == 0  # the token the outliers alone favour is pushed down



def test_mask_variant_hides_non_outlier_image_tokens_in_the_outlier_rows_only(tiny_llava, images):
    model, adapter, processor = tiny_llava.model, tiny_llava.adapter, tiny_llava.processor
    pil = halluc.api.load_images(images)
    view = qualified_view("damro", "outliers")
    batch = build_view_batch(adapter, processor, pil, PROMPTS, [Branch(view)])
    session = make_session(tiny_llava, batch, pil, PROMPTS, views=(ORIGINAL, view))
    with attach(session, [DAMRO(k=3, variant="mask")]), torch.no_grad():
        edited = model(**batch).logits[:, -1]  # (4, V): original rows, then outlier rows
    plain = adapter.build_inputs(processor, pil, PROMPTS)
    spans = [[s.positions for s in row] for row in adapter.image_spans(model, plain)]
    keep = outlier_columns(adapter.vision_cls_attention(model, plain), spans, 3, plain["input_ids"].shape[1])
    image = adapter.image_mask(model, plain["input_ids"])
    visible = plain["attention_mask"].bool() & ~(image & ~keep)  # (B, T) key columns
    t = visible.shape[1]
    mask = torch.ones(t, t, dtype=torch.bool).tril()[None, None] & visible[:, None, None, :]
    with torch.no_grad():
        vanilla = model(**plain).logits[:, -1]
        hidden = model(**{**plain, "attention_mask": mask}).logits[:, -1]
    torch.testing.assert_close(edited[:2], vanilla, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(edited[2:], hidden, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(hidden, vanilla, atol=1e-3)


def test_keeping_every_image_token_gives_the_vanilla_answer_in_the_mask_variant(tiny_llava, images):
    """(The official variant keeps them too, but in attention order, as the released code does: not vanilla.)"""
    vanilla = halluc.generate(tiny_llava, images, PROMPTS, max_new_tokens=5)
    assert halluc.generate(tiny_llava, images, PROMPTS, "damro", k=1000, beta=0.0, variant="mask",
                           max_new_tokens=5) == vanilla


@pytest.mark.parametrize("name", ["tiny-qwen2-vl", "tiny-instructblip"])
def test_families_without_a_cls_vision_tower_are_refused(tiny_models, images, name):
    with pytest.raises(HallucError, match="'damro' (does not support|needs a vision CLS)"):
        halluc.generate(tiny_models(name), images, PROMPTS, "damro")




def test_sampling_and_beam_search_run(tiny_llava, images):
    assert len(halluc.generate(tiny_llava, images, PROMPTS, "damro", do_sample=True, seed=1, max_new_tokens=3)) == 2
    assert len(halluc.generate(tiny_llava, images, PROMPTS, "damro", num_beams=2, max_new_tokens=3)) == 2


def test_official_cls_attention_is_one_merged_head_softmax(tiny_llava, images):
    """softmax(q·kᵀ/√C) of the CLS query's q_proj output against every k_proj output at full width C,
    in the CLIP layer LLaVA reads (`vision_feature_layer`), the CLS column dropped; not a mean of heads."""
    model, adapter = tiny_llava.model, tiny_llava.adapter
    inputs = adapter.build_inputs(tiny_llava.processor, halluc.api.load_images(images), PROMPTS)
    tower = adapter.resolve(model, "vision")
    with torch.no_grad():
        hidden = tower(pixel_values=inputs["pixel_values"], output_hidden_states=True).hidden_states
    layers = tower.vision_model.encoder.layers if hasattr(tower, "vision_model") else tower.encoder.layers
    index = model.config.vision_feature_layer % len(layers)  # -2: the layer whose output LLaVA feeds the LM
    attn, x = layers[index].self_attn, layers[index].layer_norm1(hidden[index])
    with torch.no_grad():
        q, k = attn.q_proj(x[:, :1]), attn.k_proj(x)  # (N, 1, C), (N, T, C)
    expected = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)[:, 0, 1:]
    merged = adapter.vision_cls_attention(model, inputs, merged_heads=True)
    torch.testing.assert_close(merged, expected, atol=1e-6, rtol=1e-5)
    averaged = adapter.vision_cls_attention(model, inputs)
    assert not torch.allclose(merged, averaged, atol=1e-3)


def test_compacted_positions_renumber_the_kept_slots_and_the_text_after():
    positions = torch.arange(12)  # [t t t | i0 .. i5 | t t t]
    span = torch.arange(3, 9)
    new = compacted_positions(positions, span, k=2)
    assert new[:5].tolist() == [0, 1, 2, 3, 4]  # the prefix, then the two kept slots at s, s + 1
    assert new[9:].tolist() == [5, 6, 7]  # the text after continues right after them
    assert new[5:9].tolist() == [5, 6, 7, 8]  # hidden slots: unchanged (never seen)


def official_negative_logits(lvlm, image, prompt: str, k: int, steps_tokens: list[int]) -> torch.Tensor:
    """The released code's negative branch, built literally: the prompt with the image's P placeholders
    replaced by k, those k features = the projected outlier patches in top-k order of the merged-head
    CLS attention, plain positions 0..L'-1; (steps, V) log-probs over the given generated tokens."""
    model, adapter, processor = lvlm.model, lvlm.adapter, lvlm.processor
    inputs = adapter.build_inputs(processor, [image], [prompt])
    order = adapter.vision_cls_attention(model, inputs, merged_heads=True)[0].topk(k).indices
    ids = inputs["input_ids"][0]
    image_id = adapter.image_token_id(model)
    first = int((ids == image_id).nonzero()[0])
    short = torch.cat([ids[:first], torch.full((k,), image_id), ids[ids != image_id][first:],
                       torch.tensor(steps_tokens[:-1], dtype=torch.long)])
    with torch.no_grad():
        features = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output[0]  # (P, d)
        embeds = model.get_input_embeddings()(short[None]).clone()
        embeds[0, first:first + k] = features[order]
        logits = model(inputs_embeds=embeds, attention_mask=torch.ones(1, len(short), dtype=torch.long)).logits
    return logits[0, -len(steps_tokens):].float().log_softmax(-1)


def test_official_negative_view_is_the_released_shorter_sequence(tiny_llava, images):
    """The outlier view's log-probs at every step equal the official negative sequence run alone."""
    from dataclasses import dataclass

    from halluc.interventions import param, register
    from halluc.interventions.registry import unregister

    @dataclass(frozen=True)
    class Recorder(DAMRO):
        name = "test-damro-recorder"
        seen: list = param(())  # type: ignore[assignment]

        def combine(self, views):
            self.seen.append({key: value.clone() for key, value in views.items()})
            return super().combine(views)

    register(Recorder)
    try:
        seen: list = []
        image = halluc.api.load_images(images[:1])[0]
        result = halluc.generate(tiny_llava, [image], PROMPTS[:1], Recorder.name, k=3, seen=seen, max_new_tokens=4,
                                 return_scores=True)
    finally:
        unregister(Recorder.name)
    tokens = result.tokens[0]
    expected = official_negative_logits(tiny_llava, image, PROMPTS[0], 3, tokens)
    for step in range(len(tokens)):
        torch.testing.assert_close(seen[step]["outliers"][0], expected[step], atol=1e-4, rtol=1e-4)


def test_official_and_mask_variants_differ_and_the_official_one_refuses_llava_next(tiny_models, images):
    lvlm = tiny_models("tiny-llava")
    official = halluc.generate(lvlm, images, PROMPTS, "damro", k=3, max_new_tokens=1, return_scores=True).scores
    mask = halluc.generate(lvlm, images, PROMPTS, "damro", k=3, variant="mask", max_new_tokens=1,
                           return_scores=True).scores
    assert not torch.allclose(official, mask, atol=1e-4)
    with pytest.raises(HallucError, match="'damro' does not support llava_next"):
        halluc.generate(tiny_models("tiny-llava-next"), images, PROMPTS, "damro", max_new_tokens=1)
    assert halluc.generate(tiny_models("tiny-llava-next"), images, PROMPTS, "damro", variant="mask",
                           max_new_tokens=2)


def test_official_variant_cannot_stack_with_another_position_rewriter(tiny_llava, images):
    with pytest.raises(HallucError, match="'cca' and 'damro' both rewrite the model's position_ids"):
        halluc.generate(tiny_llava, images, PROMPTS, ["cca", "damro"], max_new_tokens=1)
    assert halluc.generate(tiny_llava, images, PROMPTS, ["cca", "damro"], variant="mask", max_new_tokens=2)
