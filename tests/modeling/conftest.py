"""Fixtures for the model-family tests: tiny models built once per session, PIL images, batches."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from halluc.modeling.families import adapter_for
from halluc.modeling.tiny import build_tiny

# Different lengths, so the batch is left-padded.
PROMPTS = ["What is in the image? Describe it briefly.", "Hi"]


@pytest.fixture(scope="session")
def tiny_vlm():
    """family -> (model, processor), default attention (LM on "halluc", the rest on SDPA)."""
    cache = {}

    def get(family: str):
        if family not in cache:
            cache[family] = build_tiny(family)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def pil_images() -> list[Image.Image]:
    """Two random images of different sizes and aspect ratios (landscape 40x30, portrait 20x50)."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(30, 40), (50, 20)]]


@pytest.fixture(scope="session")
def batch(tiny_vlm, pil_images):
    """family -> the left-padded 2-row batch of PROMPTS, one image each."""
    cache = {}

    def get(family: str) -> dict:
        if family not in cache:
            model, processor = tiny_vlm(family)
            cache[family] = adapter_for(model).build_inputs(processor, pil_images, PROMPTS)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    return PROMPTS
