"""DAMRO: top-k ViT-CLS outliers, the column mask on the outlier view's rows, the contrast."""
import pytest
import torch

import halluc
from halluc.engine.views import ORIGINAL, Branch, build_view_batch, qualified_view
from halluc.errors import HallucError
from halluc.interventions import attach
from halluc.interventions.damro import DAMRO, outlier_bias, outlier_columns
from tests.helpers import PROMPTS, combiner_for, make_session


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
    combiner = combiner_for(method, ["outliers"])
    original, outliers = torch.tensor([[2.0, 1.8, -1.0]]), torch.tensor([[0.0, 3.0, 0.0]])
    out = combiner(None, torch.cat([original, outliers]))
    lo, ln = original.log_softmax(-1), outliers.log_softmax(-1)
    expected = (3 * lo - 2 * ln).masked_fill(lo < lo.max() + torch.tensor(0.5).log(), float("-inf"))
    torch.testing.assert_close(out[:1], expected)
    assert out[0].argmax() == 0  # the token the outliers alone favour is pushed down



def test_edit_hides_non_outlier_image_tokens_in_the_outlier_rows_only(tiny_llava, images):
    model, adapter, processor = tiny_llava.model, tiny_llava.adapter, tiny_llava.processor
    pil = halluc.api.load_images(images)
    view = qualified_view("damro", "outliers")
    batch = build_view_batch(adapter, processor, pil, PROMPTS, [Branch(view)])
    session = make_session(tiny_llava, batch, pil, PROMPTS, views=(ORIGINAL, view))
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
    with pytest.raises(HallucError, match="'damro' (does not support|needs a vision CLS)"):
        halluc.generate(tiny_models(name), images, PROMPTS, "damro")




def test_sampling_and_beam_search_run(tiny_llava, images):
    assert len(halluc.generate(tiny_llava, images, PROMPTS, "damro", do_sample=True, seed=1, max_new_tokens=3)) == 2
    assert len(halluc.generate(tiny_llava, images, PROMPTS, "damro", num_beams=2, max_new_tokens=3)) == 2
