"""A model dispatched over two placements with a `device_map` (accelerate's hooks move inputs and weights
between them) gives the tokens the undispatched model gives, with methods that hook layers (VHR), edit
attention (PAI) and add decoding branches (VCD).

On CPU the two placements are "cpu" (resident weights) and "disk" (offloaded weights, streamed in for
each call, so those modules hold only meta tensors between calls); with a GPU, the language model's
layers are split over cuda:0 and CPU-offloaded weights, and with two over cuda:0 and cuda:1 (skipped on one).
"""
from __future__ import annotations

import pytest
import torch

import halluc
from halluc.modeling.registry import offline_models
from halluc.modeling.tiny import build_tiny
from tests.helpers import PROMPTS

METHODS = {"vcd": {}, "vhr": {}, "pai": {"layers": (0, 1)}}


def split_map(model, first, second) -> dict:
    """The last decoder layer, the final norm and the LM head on `second`, everything else on `first`: the
    residual stream crosses placements between the two decoder layers, and the logits come from `second`."""
    lm = "model.language_model"
    placement = {f"model.{name}": first for name, _ in model.model.named_children() if name != "language_model"}
    placement |= {f"{lm}.{name}": first for name, _ in model.model.language_model.named_children() if name != "layers"}
    return placement | {f"{lm}.layers.0": first, f"{lm}.layers.1": second, f"{lm}.norm": second, "lm_head": second}


def assert_same_tokens(dispatched, reference, images):
    for method, params in METHODS.items():
        ours = halluc.generate(dispatched, images, PROMPTS, method, max_new_tokens=4, **params)
        theirs = halluc.generate(reference, images, PROMPTS, method, max_new_tokens=4, **params)
        assert ours == theirs, method


@pytest.mark.parametrize("name", ["tiny-llava", "tiny-gemma3"])
def test_dispatched_over_cpu_and_disk_gives_the_same_tokens(name, images, tiny_models, tmp_path):
    model, _ = build_tiny(offline_models()[name].family)  # for the module names
    placement = split_map(model, "cpu", "disk")
    dispatched = halluc.load(name, device_map=placement, offload_folder=tmp_path)
    assert dispatched.model.hf_device_map == placement
    offloaded = dispatched.adapter.resolve(dispatched.model, "layers.1.attn.o_proj")
    assert offloaded.weight.device.type == "meta"  # on disk between calls, streamed in by accelerate's hook
    assert dispatched.device == torch.device("cpu")  # where inputs go: the embeddings' device
    assert_same_tokens(dispatched, tiny_models(name), images)
    assert offloaded.weight.device.type == "meta"  # and nothing halluc did kept it resident


def test_load_passes_the_device_map_to_from_pretrained(images, tiny_models, tmp_path):
    model, processor = build_tiny("llava")
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    placement = split_map(model, "cpu", "disk")
    dispatched = halluc.load(tmp_path / "saved", device_map=placement, offload_folder=tmp_path / "offload")
    assert dispatched.model.hf_device_map == placement
    assert dispatched.adapter.resolve(dispatched.model, "lm_head").weight.device.type == "meta"
    assert_same_tokens(dispatched, tiny_models("tiny-llava"), images)


def test_wrap_a_model_the_user_dispatched(images, tiny_models, tmp_path):
    from accelerate import dispatch_model

    model, processor = build_tiny("llava", attn_implementation="sdpa")
    model = dispatch_model(model, device_map=split_map(model, "cpu", "disk"), offload_dir=tmp_path)
    assert_same_tokens(halluc.wrap(model, processor), tiny_models("tiny-llava"), images)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_dispatched_over_a_gpu_and_cpu_gives_the_same_tokens(images):
    model, _ = build_tiny("llava")
    dispatched = halluc.load("tiny-llava", device_map=split_map(model, 0, "cpu"))  # CPU-offloaded weights
    assert dispatched.device == torch.device("cuda:0")
    assert_same_tokens(dispatched, halluc.load("tiny-llava", device="cuda:0"), images)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_dispatched_over_two_gpus_gives_the_same_tokens(images):
    model, _ = build_tiny("llava")
    dispatched = halluc.load("tiny-llava", device_map=split_map(model, 0, 1))
    assert dispatched.device == torch.device("cuda:0")
    assert dispatched.adapter.resolve(dispatched.model, "lm_head").weight.device == torch.device("cuda:1")
    assert_same_tokens(dispatched, halluc.load("tiny-llava", device="cuda:0"), images)
