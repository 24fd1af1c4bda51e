"""A branch that keeps the prompts and images reuses the original view's processor output."""
from __future__ import annotations

import torch
from PIL import Image

from halluc.engine.views import Branch, build_view_batch, merge_inputs, view_inputs
from tests.helpers import PROMPTS


class CountingProcessor:
    """The tiny processor, counting its calls."""

    def __init__(self, processor):
        self.inner, self.calls = processor, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_pixel_and_plain_branches_call_the_processor_once_and_match_separate_calls(tiny_llava):
    images = [Image.new("RGB", (40, 32), (200, 30, 30)), Image.new("RGB", (32, 40), (20, 120, 220))]
    branches = [Branch("noised", pixels=lambda p: p * 0.5 + 1.0), Branch("plain"),
                Branch("system", system="Be careful.")]
    counting = CountingProcessor(tiny_llava.processor)
    batch = build_view_batch(tiny_llava.adapter, counting, images, PROMPTS, branches)
    assert counting.calls == 2  # the original, and the branch that changes the system prompt
    adapter, processor = tiny_llava.adapter, tiny_llava.processor
    separate = [adapter.build_inputs(processor, images, PROMPTS),
                *(view_inputs(adapter, processor, images, PROMPTS, b) for b in branches)]
    expected = merge_inputs(separate, pad_token_id=processor.tokenizer.pad_token_id)
    assert batch.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(batch[key], value), key
