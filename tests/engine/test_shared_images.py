"""Each distinct image runs through the vision tower once per call, with the same features for every row."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

import halluc
from halluc.engine.shared_images import distinct_images_once
from halluc.images import distinct_rows
from halluc.kernels.backend import active_edits
from halluc.kernels.edits import AttentionEdit


class Tower(nn.Module):
    """A per-row map returning a ModelOutput with a tuple field, counting the rows it is given."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(12, 5)
        self.rows_seen: list[int] = []

    def forward(self, pixel_values, output_hidden_states=False, mask=None):
        self.rows_seen.append(pixel_values.shape[0])
        hidden = self.proj(pixel_values.flatten(1))  # (N, 5)
        return BaseModelOutputWithPooling(last_hidden_state=hidden[:, None], pooler_output=hidden.sum(-1),
                                          hidden_states=(hidden, hidden * 2) if output_hidden_states else None)


def pixels_with_repeats() -> torch.Tensor:
    torch.manual_seed(0)
    a, b, c = torch.randn(3, 3, 2, 2)
    return torch.stack([a, b, a, c, b, a])  # (6, 3, 2, 2): three distinct rows


def test_distinct_rows_in_first_seen_order():
    pixels = pixels_with_repeats()
    distinct, inverse = distinct_rows(pixels)
    assert inverse.tolist() == [0, 1, 0, 2, 1, 0]
    assert torch.equal(distinct, pixels[[0, 1, 3]])


def test_rows_equal_at_every_sampled_pixel_but_one_are_two_rows():
    """The sampled pixels only pick candidates: a difference anywhere else still splits the rows."""
    row = torch.zeros(1, 3, 40, 40)
    other = row.clone()
    other[0, 1, 17, 3] = 1.0  # not among the 64 sampled of 4,800 values
    distinct, inverse = distinct_rows(torch.cat([row, other, row]))
    assert inverse.tolist() == [0, 1, 0] and distinct.shape[0] == 2


def test_the_tower_sees_each_distinct_row_once_and_every_row_gets_its_features():
    tower, pixels = Tower(), pixels_with_repeats()
    expected = tower(pixels, output_hidden_states=True)
    with distinct_images_once(tower):
        got = tower(pixels, output_hidden_states=True)
        positional_only = tower(pixels)
    assert tower.rows_seen == [6, 3, 3]
    assert isinstance(got, BaseModelOutputWithPooling)
    assert torch.equal(got.last_hidden_state, expected.last_hidden_state)
    assert torch.equal(got.pooler_output, expected.pooler_output)
    assert all(torch.equal(g, e) for g, e in zip(got.hidden_states, expected.hidden_states))
    assert torch.equal(positional_only.last_hidden_state, expected.last_hidden_state)
    with distinct_images_once(tower):
        tower(pixel_values=pixels)  # by keyword
    assert tower.rows_seen[-1] == 3


def test_hooks_are_gone_after_the_block_even_after_an_error():
    tower = Tower()
    with pytest.raises(RuntimeError), distinct_images_once(tower):
        raise RuntimeError("boom")
    assert not tower._forward_pre_hooks and not tower._forward_hooks
    tower(pixels_with_repeats())
    assert tower.rows_seen == [6]


@pytest.mark.parametrize("case", ["submodule hook", "tower hook", "attention edit", "second tensor", "flat patches"])
def test_every_row_runs_when_something_watches_the_tower_or_the_call_is_not_plain_pixels(case):
    tower, pixels = Tower(), pixels_with_repeats()
    kwargs, edits = {}, {}
    if case == "submodule hook":
        tower.proj.register_forward_hook(lambda *a: None)
    elif case == "tower hook":
        tower.register_forward_pre_hook(lambda *a: None)
    elif case == "attention edit":
        edits = {tower.proj: AttentionEdit()}
    elif case == "second tensor":
        kwargs = {"mask": torch.ones(6, 2)}
    else:
        pixels = pixels.flatten(1)  # (N, P): Qwen2-VL-style patches
    with active_edits(edits), distinct_images_once(tower):
        tower(pixels, **kwargs)
    assert tower.rows_seen == [6]


def test_a_batch_repeating_an_image_generates_what_each_sample_generates_alone(tiny_llava):
    """End to end, with the sharing on: tokens and per-step scores of a batch with a repeated image equal
    single runs, and the tower ran on the distinct images only (plain, and with VCD's noised view, keyed by
    the pixels). The rows are counted in the tower's forward itself: a hook would count as watching."""
    red, blue = Image.new("RGB", (40, 32), (200, 30, 30)), Image.new("RGB", (32, 40), (20, 120, 220))
    images, prompts = [red, blue, red], ["Is there a cat?", "Describe it.", "What colour?"]
    tower = tiny_llava.adapter.resolve(tiny_llava.model, "vision")
    counted = []
    inner = tower.forward
    tower.forward = lambda *a, **k: (counted.append((a[0] if a else k["pixel_values"]).shape[0]), inner(*a, **k))[1]
    try:
        for method, distinct in (("none", 2), ("vcd", 4)):  # red, blue (and noised red, noised blue)
            counted.clear()
            batch = halluc.generate(tiny_llava, images, prompts, method, max_new_tokens=4, return_scores=True)
            assert counted == [distinct]
            singles = [halluc.generate(tiny_llava, i, p, method, max_new_tokens=4, return_scores=True)
                       for i, p in zip(images, prompts)]
            assert batch.tokens == [s.tokens[0] for s in singles]
            for row, single in enumerate(singles):
                steps = single.scores.shape[1]
                torch.testing.assert_close(batch.scores[row, :steps], single.scores[0], atol=1e-4, rtol=1e-4)
    finally:
        del tower.forward
