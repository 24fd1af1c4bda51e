"""Shared fixtures: tiny offline models (built once per session) and small test images.

HALLUC_TEST_DEVICE (default cpu) is where `tiny_models` loads them: `speed/gpu_check.sh` runs the method
contract with HALLUC_TEST_DEVICE=cuda.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

import halluc
from halluc.modeling.registry import families

# every family's tiny offline model, from the family records
FAMILIES = [f.tiny_name for f in families()]
FAMILY_NAMES = [f.name for f in families()]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEST_DEVICE = os.environ.get("HALLUC_TEST_DEVICE", "cpu")

torch.set_num_threads(2)


def pytest_configure(config):
    if TEST_DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise pytest.UsageError(f"HALLUC_TEST_DEVICE={TEST_DEVICE}, but torch sees no CUDA device")
def pytest_collection_modifyitems(config, items):
    """The large fuzz budget runs only when asked for (`pytest -m fuzz`); the small one runs every time."""
    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="large fuzz budget: run with -m fuzz")
    for item in items:
        if "fuzz" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def steering_cache(tmp_path_factory):
    """Vectors a test computes (VTI) go to a temporary cache, never the user's ~/.cache/halluc."""
    previous = os.environ.get("HALLUC_CACHE")
    os.environ["HALLUC_CACHE"] = str(tmp_path_factory.mktemp("halluc-cache"))
    yield Path(os.environ["HALLUC_CACHE"])
    if previous is None:
        os.environ.pop("HALLUC_CACHE", None)
    else:
        os.environ["HALLUC_CACHE"] = previous


@pytest.fixture(scope="session")
def tiny_models():
    cache: dict[str, halluc.LVLM] = {}

    def get(name: str) -> halluc.LVLM:
        if name not in cache:
            cache[name] = halluc.load(name, device=TEST_DEVICE)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def tiny_llava(tiny_models):
    return tiny_models("tiny-llava")


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> list[Path]:
    """Two small distinct RGB images on disk."""
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, colour in enumerate([(200, 30, 30), (20, 120, 220)]):
        img = Image.new("RGB", (40, 32), colour)
        img.paste((255, 255, 255), (5 + 10 * i, 5, 20 + 10 * i, 20))
        path = folder / f"img{i}.png"
        img.save(path)
        paths.append(path)
    return paths
