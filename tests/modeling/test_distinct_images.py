"""A batch that repeats an image loads and preprocesses it once, and gets exactly the inputs of copies."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from halluc.images import load_images
from halluc.modeling import distinct_images
from halluc.modeling.distinct_images import images_processed_once

FAMILY_MODELS = ["tiny-llava", "tiny-llava-next", "tiny-gemma3", "tiny-idefics3", "tiny-mistral3", "tiny-internvl",
                 "tiny-qwen2-vl", "tiny-llava-onevision", "tiny-instructblip"]


def test_a_path_or_an_image_given_twice_loads_to_one_object(images):
    red, blue = images
    loaded = load_images([red, blue, str(red), red])
    assert loaded[0] is loaded[2] is loaded[3] and loaded[1] is not loaded[0]
    pil = Image.open(blue)
    again = load_images([pil, pil])
    assert again[0] is again[1] and again[0] is not pil  # converted once, the caller's image untouched


class Counting:
    """An image processor stand-in's inner: counts the images each call gets."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, images, *args, **kwargs):
        self.calls.append(len(images))
        return self.inner(images, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_every_family_gets_the_inputs_of_separate_copies(name, tiny_models):
    lvlm = tiny_models(name)
    red, blue = Image.new("RGB", (40, 32), (200, 30, 30)), Image.new("RGB", (64, 40), (20, 120, 220))
    prompts = ["Is there a cat?", "Describe it.", "What colour?", "Anything red?"]
    shared = lvlm.adapter.build_inputs(lvlm.processor, [red, blue, red, red], prompts)
    copies = lvlm.adapter.build_inputs(lvlm.processor, [red.copy(), blue.copy(), red.copy(), red.copy()], prompts)
    assert shared.keys() == copies.keys()
    for key, value in copies.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(shared[key], value), key
        else:
            assert shared[key] == value, key


def test_the_image_processor_sees_each_distinct_object_once_and_is_restored(tiny_llava):
    processor = tiny_llava.processor
    real = processor.image_processor
    counting = Counting(real)
    processor.image_processor = counting
    try:
        red, blue = Image.new("RGB", (40, 32), (200, 30, 30)), Image.new("RGB", (32, 40), (20, 120, 220))
        inputs = tiny_llava.adapter.build_inputs(processor, [red, blue, red, red, blue], ["a"] * 5)
        assert counting.calls == [2] and inputs["pixel_values"].shape[0] == 5
        assert processor.image_processor is counting  # the caller's processor is back as it was
    finally:
        processor.image_processor = real


def test_a_processor_without_one_row_per_image_is_called_on_every_image_from_then_on(monkeypatch):
    """Flattened patches (Qwen2-VL-style): the outputs cannot be spread, so the full call is made and the
    processor class is not deduplicated again."""

    class Flat:
        calls: list[int] = []

        def __call__(self, images, **kwargs):
            self.calls.append(len(images))
            return {"pixel_values": torch.zeros(3 * len(images), 4)}  # three patches per image

    class Processor:
        image_processor = Flat()

    monkeypatch.setattr(distinct_images, "_NOT_PER_IMAGE", set())
    img = Image.new("RGB", (8, 8))
    processor = Processor()
    for _ in range(2):
        with images_processed_once(processor):
            out = processor.image_processor([img, img, img])
        assert out["pixel_values"].shape == (9, 4)
    assert Flat.calls == [1, 3, 3]


def test_a_processor_whose_image_processor_cannot_be_set_runs_as_it_is():
    class Fixed:
        def __init__(self):
            self.calls = []

        @property
        def image_processor(self):
            return lambda images, **kwargs: self.calls.append(len(images)) or {"pixel_values": torch.zeros(len(images))}

    processor, img = Fixed(), Image.new("RGB", (8, 8))
    with images_processed_once(processor):
        out = processor.image_processor([img, img])
    assert processor.calls == [2] and out["pixel_values"].shape == (2,)
