"""CCA: ring ids, concentric positions, the ring mask, consistent decode positions."""
import pytest
import torch

import halluc
from halluc.errors import HallucError
from halluc.interventions.cca import concentric_mask, concentric_positions, ring_ids
from halluc.modeling.base import ImageSpan

PROMPTS = ["Describe the image.", "What is it?"]


def test_ring_ids_of_square_and_oblong_grids():
    assert ring_ids(4, 4).view(4, 4).tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert ring_ids(3, 5).view(3, 5).tolist() == [[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]]
    ring24 = ring_ids(24, 24)
    assert ring24.max() == 11 and torch.bincount(ring24).tolist() == list(range(92, 0, -8))  # LLaVA-1.5


def test_concentric_positions_shift_the_text_after_each_image():
    grid = ImageSpan(torch.arange(2, 18), (4, 4))  # 2 prefix tokens, a 4x4 image, 3 text tokens
    new = concentric_positions(torch.arange(21)[None], [[grid]])[0]
    assert new[:2].tolist() == [0, 1] and new[2:18].tolist() == (2 + ring_ids(4, 4)).tolist()
    assert new[18:].tolist() == [4, 5, 6]  # s + #rings onwards: shifted by -(16 - 2)
    # left padding (3 pads at id 0), then two images (3x5 and 4x4) with one text token between them
    ids = torch.cat([torch.zeros(3, dtype=torch.long), torch.arange(36)])[None]
    spans = [[ImageSpan(torch.arange(4, 19), (3, 5)), ImageSpan(torch.arange(20, 36), (4, 4))]]
    new = concentric_positions(ids, spans)[0]
    assert new[:4].tolist() == [0, 0, 0, 0] and new[4:19].tolist() == (1 + ring_ids(3, 5)).tolist()
    assert new[19] == 3 and new[20:36].tolist() == (4 + ring_ids(4, 4)).tolist() and new[36:].tolist() == [6, 7, 8]


def test_ring_mask_inside_the_image_and_causal_outside():
    span = ImageSpan(torch.arange(1, 17), (4, 4))
    mask = concentric_mask(torch.ones(1, 19), [[span]])[0, 0]  # (T, T): 1 prefix, 16 image, 2 text
    ring = ring_ids(4, 4)
    block = mask[1:17, 1:17]
    assert torch.equal(block, ring[None, :] <= ring[:, None])
    corner, centre = 1, 1 + 5  # raster (0,0) on ring 0, (1,1) on ring 1
    assert mask[corner, 1:17].sum() == 12 and mask[centre, 1:17].all()  # the border sees its ring both ways
    assert mask[1:17, 0].all() and mask[17:, :17].all() and not mask[17, 18]  # prefix, after-text causal
    padded = concentric_mask(torch.tensor([[0, 0] + [1] * 17]), [[ImageSpan(torch.arange(2, 18), (4, 4))]])[0, 0]
    assert not padded[:, :2].any()  # a pad column is never visible



@pytest.mark.parametrize("positions,mask", [(True, True), (True, False)])
def test_decode_steps_continue_from_the_shifted_positions(tiny_llava, images, positions, mask):
    """Every step's logits equal one cache-free forward over prompt + generated tokens with CCA ids/mask."""
    result = halluc.generate(tiny_llava, images, PROMPTS, "cca", positions=positions, mask=mask,
                             max_new_tokens=5, return_scores=True)
    inputs = tiny_llava.adapter.build_inputs(tiny_llava.processor, halluc.api.load_images(images), PROMPTS)
    for row, tokens in enumerate(result.tokens):
        n = len(tokens)
        ids = torch.cat([inputs["input_ids"][row:row + 1], torch.tensor([tokens[:-1]])], dim=1)
        padding = torch.cat([inputs["attention_mask"][row:row + 1], torch.ones(1, n - 1, dtype=torch.long)], dim=1)
        spans = tiny_llava.adapter.image_spans(tiny_llava.model, {"input_ids": ids})
        plain = (padding.cumsum(-1) - 1).clamp_min(0)
        kwargs = {"position_ids": concentric_positions(plain, spans) if positions else plain,
                  "attention_mask": concentric_mask(padding, spans) if mask else padding}
        with torch.no_grad():
            logits = tiny_llava.model(input_ids=ids, pixel_values=inputs["pixel_values"][row:row + 1], **kwargs).logits
        torch.testing.assert_close(result.scores[row, :n], logits[0, -n:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["tiny-llava-next", "tiny-qwen2-vl", "tiny-instructblip"])
def test_other_families_are_refused(tiny_models, images, name):
    with pytest.raises(HallucError, match="'cca' (does not support|needs)"):
        halluc.generate(tiny_models(name), images, PROMPTS, "cca")
