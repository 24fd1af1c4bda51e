"""DAMRO: top-k ViT-CLS outliers, the column mask on the outlier view's rows, the contrast."""
import pytest
import torch

import halluc
from halluc.decoding.branches import ORIGINAL, Branch, BranchCombiner, build_view_batch
from halluc.errors import HallucError
from halluc.interventions import Session, attach
from halluc.interventions.damro import DAMRO, outlier_bias, outlier_columns
from halluc.kernels.backend import current_edits
from tests.interventions.helpers import (PROMPTS, batch_and_singles, first_logits, generate_failing, hook_count,
                                         settled_hook_count)

SUPPORTED = ["tiny-llava", "tiny-llava-next"]


def test_top_k_per_image_and_column_mask_on_hand_made_attention():
    cls = torch.tensor([[0.1, 0.5, 0.05, 0.3, 0.05, 0.0, 0.9, 0.2]])  # one row, two 4-token images
    positions = [[torch.tensor([2, 3, 4, 5]), torch.tensor([7, 8, 9, 10])]]
    keep = outlier_columns(cls, positions, k=2, width=12)
    assert keep[0].nonzero().flatten().tolist() == [3, 5, 9, 10]  # top-2 of each image
    image = torch.zeros(1, 12, dtype=torch.bool)
    image[0, [2, 3, 4, 5, 7, 8, 9, 10]] = True
    bias = outlier_bias(image, keep)
    assert torch.isinf(bias[0, [2, 4, 7, 8]]).all() and (bias[0, [2, 4, 7, 8]] < 0).all()
    assert (bias[0, [0, 1, 3, 5, 6, 9, 10, 11]] == 0).all()  # text and the outliers stay visible
    assert outlier_columns(cls, positions, k=10, width=12).sum() == 8  # k beyond the image: all of it


def test_contrast_and_cutoff_formula():
    method = DAMRO(alpha=2.0, beta=0.5)
    combiner = BranchCombiner([ORIGINAL, "outliers"], method.combine, method.plausibility())
    original, outliers = torch.tensor([[2.0, 1.8, -1.0]]), torch.tensor([[0.0, 3.0, 0.0]])
    out = combiner(None, torch.cat([original, outliers]))
    lo, ln = original.log_softmax(-1), outliers.log_softmax(-1)
    expected = (3 * lo - 2 * ln).masked_fill(lo < lo.max() + torch.tensor(0.5).log(), float("-inf"))
    torch.testing.assert_close(out[:1], expected)
    assert out[0].argmax() == 0  # the token the outliers alone favour is pushed down


def test_zero_strength_is_bit_identical(tiny_llava, images):
    assert DAMRO(alpha=0.0, beta=0.0).branches(None) == []
    assert torch.equal(first_logits(tiny_llava, images, "damro", alpha=0.0, beta=0.0), first_logits(tiny_llava, images))


def test_edit_hides_non_outlier_image_columns_in_the_outlier_rows_only(tiny_llava, images):
    model, adapter, processor = tiny_llava.model, tiny_llava.adapter, tiny_llava.processor
    pil = halluc.api.load_images(images)
    batch = build_view_batch(adapter, processor, pil, PROMPTS, [Branch("outliers")])
    session = Session(tiny_llava, batch, images=pil, prompts=PROMPTS, views=(ORIGINAL, "outliers"))
    with attach(session, [DAMRO(k=3)]), torch.no_grad():
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


def test_keeping_every_image_token_gives_the_vanilla_answer(tiny_llava, images):
    vanilla = halluc.generate(tiny_llava, images, PROMPTS, max_new_tokens=5)
    assert halluc.generate(tiny_llava, images, PROMPTS, "damro", k=1000, beta=0.0, max_new_tokens=5) == vanilla


@pytest.mark.parametrize("name", ["tiny-qwen2-vl", "tiny-instructblip"])
def test_families_without_a_cls_vision_tower_are_refused(tiny_models, images, name):
    with pytest.raises(HallucError, match="'damro' does not support"):
        halluc.generate(tiny_models(name), images, PROMPTS, "damro")


def test_no_hooks_or_edits_left_after_success_or_error(tiny_llava, images, monkeypatch):
    before = settled_hook_count(tiny_llava, images)
    implementation = tiny_llava.adapter.text_config(tiny_llava.model)._attn_implementation
    halluc.generate(tiny_llava, images, PROMPTS, "damro", max_new_tokens=2)
    assert hook_count(tiny_llava.model) == before and dict(current_edits()) == {}
    generate_failing(tiny_llava, images, "damro", monkeypatch)
    assert hook_count(tiny_llava.model) == before and dict(current_edits()) == {}
    assert tiny_llava.adapter.text_config(tiny_llava.model)._attn_implementation == implementation


@pytest.mark.parametrize("name", SUPPORTED)
def test_generates_and_batch_equals_single(tiny_models, images, name):
    lvlm = tiny_models(name)
    batch, singles = batch_and_singles(lvlm, images, "damro", max_new_tokens=4)
    assert batch == singles


def test_sampling_and_beam_search_run(tiny_llava, images):
    assert len(halluc.generate(tiny_llava, images, PROMPTS, "damro", do_sample=True, seed=1, max_new_tokens=3)) == 2
    assert len(halluc.generate(tiny_llava, images, PROMPTS, "damro", num_beams=2, max_new_tokens=3)) == 2
