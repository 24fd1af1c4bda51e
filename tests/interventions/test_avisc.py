"""AvisC: layers chosen by their share of image attention (top-p γ), blind tokens above mean + λ·std, a
contrast view whose other image embeddings are zeroed at its prefill; per-step logits on toy-llava against a
hand-written forward of both views, each with its own cache."""
import math

import pytest
import torch

import halluc
from halluc.errors import HallucError
from halluc.interventions.avisc import AvisC, blind_tokens, top_p_layers
from halluc.world import render_scene, scene_at
from halluc.world.model import TRAIN_WORLD
from tests.helpers import PROMPTS, batch_and_singles, combiner_for
from tests.interventions.manual_lm import Edits, ManualLM

STEPS = 6


@pytest.fixture(scope="module")
def scene():
    return render_scene(scene_at(TRAIN_WORLD, "val", 11))


def test_layers_are_the_top_p_share_of_image_attention():
    assert top_p_layers(torch.tensor([5.0, 3.0, 2.0]), 0.5).tolist() == [True, False, False]  # 0.5 is not < 0.5
    assert top_p_layers(torch.tensor([2.0, 4.5, 3.5]), 0.5).tolist() == [False, True, True]  # 0.45 < 0.5: K = 2
    assert top_p_layers(torch.tensor([1.0, 1.0, 1.0, 1.0]), 1.0).tolist() == [True] * 4
    assert top_p_layers(torch.tensor([1.0, 1.0]), 0.4).tolist() == [True, False]  # a tie: the earlier layer


def test_blind_tokens_lie_lambda_deviations_above_the_mean_of_the_top_p_layers():
    # layer 0 holds 0.8 of the image attention (K = 1 at γ 0.5): u = its row, mean 0.2, unbiased std 0.2
    rows = torch.tensor([[0.1, 0.1, 0.1, 0.5], [0.05, 0.05, 0.05, 0.05]])
    assert blind_tokens(rows, 0.5, 1.0).tolist() == [False, False, False, True]
    assert blind_tokens(rows, 0.5, 2.0).tolist() == [False] * 4  # 0.5 < 0.2 + 2·0.2: none, all zeroed
    # γ = 1 reads both layers: u = [0.075] * 3 + [0.275]
    assert blind_tokens(rows, 1.0, 1.0).tolist() == [False, False, False, True]


def test_contrast_and_cutoff():
    combiner = combiner_for(AvisC(beta=0.0, alpha=2.5), ["blind"])
    original, view = torch.tensor([[2.0, 1.0, -4.0]]), torch.tensor([[2.0, -1.0, 0.0]])
    lo, lv = original.log_softmax(-1), view.log_softmax(-1)
    torch.testing.assert_close(combiner(None, torch.cat([original, view]))[:1], 3.5 * lo - 2.5 * lv)
    assert AvisC().plausibility_cutoff() == 0.1


@pytest.mark.parametrize("bad", [{"gamma": 0.0}, {"gamma": 1.5}, {"beta": 2.0}, {"alpha": -1.0},
                                 {"masking": "noise"}, {"lamb": float("nan")}])
def test_parameters_are_validated(bad):
    with pytest.raises(HallucError, match="avisc: parameter"):
        AvisC(**bad)


def literal_avisc(toy, inputs, tokens, alpha=1.0, beta=0.1, lamb=1.0, gamma=0.5):
    """The spec's §4.1 on one sample, greedy: the original's prefill attention picks the blind tokens, the
    contrast branch zeroes the other image embeddings at its prefill, then both decode the same tokens."""
    ids = inputs["input_ids"][0]
    image = (ids == toy.model.config.image_token_id).nonzero().flatten()  # instead of the code's 35 + range(576)
    last_rows = {}

    def probs(layer, p, v):
        if p.shape[2] > 1:  # the prefill
            last_rows[layer] = p.mean(1)[0, -1, image]  # head mean, last prompt row, image columns

    plain, blind = ManualLM(toy), ManualLM(toy)
    embeddings = plain.embeddings(inputs)
    hidden = plain.forward(embeddings, Edits(probs=probs))
    portion = torch.stack([last_rows[i].sum() for i in range(len(last_rows))])
    portion = portion / portion.sum()
    k = (torch.sort(portion, descending=True)[0].cumsum(0) < gamma).sum() + 1
    layers = torch.topk(portion, int(k)).indices
    u = torch.stack([last_rows[int(i)] for i in layers]).mean(0)
    masked = torch.where(u < u.mean() + u.std() * lamb)[0]
    zeroed = embeddings.clone()
    zeroed[0, image[masked]] = 0.0
    states = [hidden, blind.forward(zeroed)]
    out = []
    for token in tokens:
        z, z_blind = (lm.logits(h)[0] for lm, h in zip((plain, blind), states))
        cutoff = math.log(beta) + z.max()
        out.append(((1 + alpha) * z - alpha * z_blind).masked_fill(z < cutoff, float("-inf")))
        states = [lm.forward(lm.token_embedding(token)) for lm in (plain, blind)]
    return torch.stack(out), len(masked), len(image)


def test_per_step_logits_match_a_literal_reading_of_the_code(toy, scene):
    prompt = "Describe this image."
    got = halluc.generate(toy, [scene], [prompt], "avisc", max_new_tokens=STEPS, return_scores=True)
    inputs = toy.adapter.build_inputs(toy.processor, [scene], [prompt])
    want, masked, count = literal_avisc(toy, inputs, got.tokens[0])
    assert 0 < masked < count  # some tokens are blind, some zeroed
    # ours combines log-probabilities: the same distribution as the code's raw-logit contrast, the same cutoff
    torch.testing.assert_close(got.scores[0, :len(want)].log_softmax(-1), want.log_softmax(-1), atol=1e-4, rtol=1e-4)
    assert got.tokens[0] == want.argmax(-1).tolist()
    plain = halluc.generate(toy, [scene], [prompt], max_new_tokens=1, return_scores=True).scores[0, 0]
    assert not torch.allclose(got.scores[0, 0].log_softmax(-1), plain.log_softmax(-1), atol=1e-3)


def layer0_inputs(lvlm, images, prompts, **params):
    """(rows, T, d) what decoder layer 0's first computation received in the generate call's prefill."""
    seen = []
    norm = lvlm.adapter.resolve(lvlm.model, "layers.0.input_norm")
    handle = norm.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        halluc.generate(lvlm, images, prompts, "avisc", max_new_tokens=1, **params)
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("masking, fill", [("zeros", 0.0), ("ones", 1.0)])
def test_only_the_contrast_rows_other_image_tokens_are_overwritten(toy, scene, masking, fill):
    other = render_scene(scene_at(TRAIN_WORLD, "val", 3))
    prompts = ["Describe this image.", "Is there a red circle in the image?"]
    seen = layer0_inputs(toy, [scene, other], prompts, masking=masking)
    aux, real = seen[0], seen[1]  # the auxiliary prefill of the batch as given, then the real prefill
    assert aux.shape[0] == real.shape[0] == 4
    torch.testing.assert_close(aux[2:], aux[:2])  # the auxiliary pass sees the contrast rows unedited
    ids = toy.adapter.build_inputs(toy.processor, [scene, other], prompts)["input_ids"]
    image = ids == toy.model.config.image_token_id
    torch.testing.assert_close(real[:2], real[2:].where(~image[..., None], real[:2]))  # text rows alike
    for row in range(2):
        original, contrast = real[row, image[row]], real[2 + row, image[row]]  # (N, d)
        overwritten = (contrast == fill).all(-1)
        assert overwritten.any() and not overwritten.all()
        torch.testing.assert_close(contrast[~overwritten], original[~overwritten])


def test_a_batch_equals_its_samples_alone(tiny_llava, images):
    prompts = ["Describe the image in a few words.", "What is it?"]
    batch, singles = batch_and_singles(tiny_llava, images, "avisc", prompts=prompts, max_new_tokens=4)
    assert batch == singles
    scores = halluc.generate(tiny_llava, images, prompts, "avisc", max_new_tokens=1, return_scores=True).scores
    for i in range(2):
        alone = halluc.generate(tiny_llava, [images[i]], [prompts[i]], "avisc", max_new_tokens=1,
                                return_scores=True).scores
        torch.testing.assert_close(scores[i], alone[0], atol=1e-5, rtol=1e-5)


def test_a_wrapped_model_on_sdpa_reads_the_attention_on_our_backend(images):
    lvlm = halluc.load("tiny-llava")
    reference = halluc.generate(lvlm, images, PROMPTS, "avisc", max_new_tokens=1, return_scores=True).scores
    wrapped = halluc.wrap(lvlm.model, lvlm.processor)
    lvlm.model.set_attn_implementation({"text_config": "sdpa"})
    got = halluc.generate(wrapped, images, PROMPTS, "avisc", max_new_tokens=1, return_scores=True).scores
    assert lvlm.adapter.text_config(lvlm.model)._attn_implementation == "sdpa"  # switched back
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("other", ["vcd", "vhr", "sid", "pai", "only"])
def test_stacks_with_in_model_and_decoding_methods(toy, scene, other):
    scores = halluc.generate(toy, [scene], ["Is there a cup in the image?"], ["avisc", other], max_new_tokens=2,
                             return_scores=True).scores
    assert not scores.isnan().any() and scores.isfinite().any(-1).all()
    alone = halluc.generate(toy, [scene], ["Is there a cup in the image?"], other, max_new_tokens=2,
                            return_scores=True).scores
    assert not torch.allclose(scores[:, 0], alone[:, 0])  # AvisC's contrast acts inside the stack


def test_stacks_under_beam_search(toy, scene):
    texts = halluc.generate(toy, [scene], ["Describe this image."], ["avisc", "vhr", "vcd"], num_beams=2,
                            max_new_tokens=3)
    assert len(texts) == 1


def test_refused_with_opera_in_one_line(toy, scene):
    with pytest.raises(HallucError, match=r"stacked with a method that adds decoding branches \(avisc:blind\)"):
        halluc.generate(toy, [scene], ["Describe this image."], ["avisc", "opera"], max_new_tokens=2)
