"""The framework itself: hooks and attention edits go in for one call and come out exactly, even on error."""
import math
from dataclasses import dataclass

import pytest
import torch

import halluc
from halluc.errors import HallucError
from halluc.interventions import HookSpec, Method, attach, param, register
from halluc.interventions.registry import unregister
from halluc.kernels import backend as kernel_backend
from halluc.kernels.backend import current_edits
from halluc.kernels.edits import AttentionEdit
from tests.helpers import hook_count, make_session


@dataclass(frozen=True)
class HeadScale(Method):
    """Test method: scale every head's output of one layer before o_proj (a VHR-like edit)."""

    name = "test-headscale"
    alpha: float = param(1.0, low=0.0)
    layer: int = param(0)

    def hooks(self, session):
        heads = session.adapter.num_heads(session.model)

        def scale(x, ctx):  # x (B, T, H*D)
            return x.view(*x.shape[:-1], heads, -1).mul(self.alpha).view_as(x)

        return [HookSpec(f"layers.{self.layer}.attn.o_proj", scale, kind="forward_pre")]


@dataclass(frozen=True)
class MaskImage(Method):
    """Test method: hide all image tokens from the LM's attention (strength 0 = identity)."""

    name = "test-maskimage"
    strength: float = param(1.0, low=0.0, high=1.0)

    def attention_edits(self, session):
        if self.strength == 0:
            return {}
        bias = torch.zeros(session.image_mask.shape).masked_fill(session.image_mask, float("-inf"))
        return {i: AttentionEdit(column_bias=bias) for i in range(session.adapter.num_layers(session.model))}


@dataclass(frozen=True)
class ScaleHeadImage(Method):
    """Test method in one file through the escape hatch: scale one head's attention on the image tokens
    by `factor` with a `score_mod` (`via="primitive"`: the same edit as a head bias, for comparison)."""

    name = "test-scalehead"
    factor: float = param(1.0, low=0.0)
    head: int = param(1, low=0)
    via: str = param("mod", choices=("mod", "primitive"))

    def attention_edits(self, session):
        if self.factor == 1:
            return {}
        layers = range(session.adapter.num_layers(session.model))
        if self.via == "primitive":
            bias = torch.zeros(session.adapter.num_heads(session.model))
            bias[self.head] = math.log(self.factor)
            return {i: AttentionEdit(head_bias=bias) for i in layers}
        return {i: AttentionEdit(score_mod=self.score_mod) for i in layers}  # attach fills in `columns`

    def score_mod(self, s, where):  # s (B, H, Tq, Tk); where.columns: the prompt's image tokens
        return s + torch.where(where.columns & (where.head == self.head), math.log(self.factor), 0.0)


@dataclass(frozen=True)
class BadPoint(Method):
    name = "test-badpoint"

    def hooks(self, session):
        return [HookSpec("layers.0.attn.o_proj", lambda x, ctx: None), HookSpec("layers.99", lambda x, ctx: None)]


@pytest.fixture(scope="module", autouse=True)
def test_methods(tiny_llava, images):
    # transformers adds its output-capture hooks on the first forward: run once so counts are stable
    halluc.generate(tiny_llava, images, ["warm up", "warm up"], max_new_tokens=1)
    for cls in (HeadScale, MaskImage, ScaleHeadImage, BadPoint):
        register(cls)
    yield
    for cls in (HeadScale, MaskImage, ScaleHeadImage, BadPoint):
        unregister(cls.name)


def first_logits(lvlm, images, method="none", **params):
    result = halluc.generate(lvlm, images, ["Describe.", "What is it?"], method, max_new_tokens=1,
                             return_scores=True, **params)
    return result.scores[:, 0]


def test_identity_at_zero_strength_is_bit_identical(tiny_llava, images):
    vanilla = first_logits(tiny_llava, images)
    assert torch.equal(first_logits(tiny_llava, images, "test-headscale", alpha=1.0), vanilla)
    assert torch.equal(first_logits(tiny_llava, images, "test-maskimage", strength=0.0), vanilla)


def test_edits_change_the_output(tiny_llava, images):
    vanilla = first_logits(tiny_llava, images)
    assert not torch.allclose(first_logits(tiny_llava, images, "test-headscale", alpha=3.0), vanilla)
    assert not torch.allclose(first_logits(tiny_llava, images, "test-maskimage"), vanilla)


def test_no_hooks_or_edits_left_after_success_or_error(tiny_llava, images):
    before = hook_count(tiny_llava.model)
    implementation = tiny_llava.model.config.text_config._attn_implementation
    halluc.generate(tiny_llava, images, ["a", "b"], ["test-headscale", "test-maskimage"], max_new_tokens=2, alpha=2.0)
    session = make_session(tiny_llava, {"input_ids": torch.tensor([[1, 2]])}, prompts=["a"])
    with pytest.raises(RuntimeError, match="boom"):
        with attach(session, [HeadScale(alpha=2.0)]):
            assert hook_count(tiny_llava.model) == before + 1
            raise RuntimeError("boom")
    assert hook_count(tiny_llava.model) == before
    assert dict(current_edits()) == {}
    assert tiny_llava.model.config.text_config._attn_implementation == implementation


def test_unresolvable_point_registers_nothing(tiny_llava, images):
    before = hook_count(tiny_llava.model)
    with pytest.raises(HallucError, match="'layers.99': llava has 2 layers"):
        halluc.generate(tiny_llava, images, ["a", "b"], "test-badpoint", max_new_tokens=1)
    assert hook_count(tiny_llava.model) == before


def test_generation_raising_inside_leaves_nothing(tiny_llava, images, monkeypatch):
    before = hook_count(tiny_llava.model)

    def explode(*args, **kwargs):
        raise RuntimeError("generation failed")

    monkeypatch.setattr(tiny_llava.model, "generate", explode)
    with pytest.raises(RuntimeError, match="generation failed"):
        halluc.generate(tiny_llava, images, ["a", "b"], ["test-headscale", "test-maskimage"], alpha=2.0)
    assert hook_count(tiny_llava.model) == before and dict(current_edits()) == {}


def test_apply_scopes_methods_and_restores(tiny_llava, images):
    vanilla = first_logits(tiny_llava, images)
    with halluc.apply(tiny_llava, "test-headscale", alpha=3.0):
        inside = first_logits(tiny_llava, images)
        with pytest.raises(ValueError):
            with halluc.apply(tiny_llava, "test-maskimage"):
                raise ValueError("inner failure")
        assert [m.name for m in tiny_llava.active] == ["test-headscale"]
    assert tiny_llava.active == []
    assert not torch.allclose(inside, vanilla)
    assert torch.equal(first_logits(tiny_llava, images), vanilla)
    assert torch.equal(inside, first_logits(tiny_llava, images, "test-headscale", alpha=3.0))


def test_two_methods_editing_one_layer_are_refused(tiny_llava, images):
    @dataclass(frozen=True)
    class Other(MaskImage):
        name = "test-maskimage2"

    register(Other)
    try:
        with pytest.raises(HallucError, match="both edit attention in layer 0"):
            halluc.generate(tiny_llava, images, ["a", "b"], ["test-maskimage", "test-maskimage2"])
    finally:
        unregister(Other.name)


def test_attention_edits_follow_beam_expansion(tiny_llava, images):
    """generate() repeats each sample's row per beam; per-sample column edits must follow."""
    masked = halluc.generate(tiny_llava, images, ["Describe.", "What is it?"], "test-maskimage", num_beams=3,
                             max_new_tokens=3)
    assert len(masked) == 2


def test_a_missing_module_path_names_the_point_and_the_family(tiny_llava):
    from dataclasses import replace

    from halluc.modeling.base import ModulePaths

    broken = replace(tiny_llava.adapter, paths=ModulePaths(layers="model.language_model.layers",
                                                           final_norm="model.final_norm", lm_head="lm_head",
                                                           vision_tower=None))
    with pytest.raises(HallucError, match="llava: hook point 'norm' is at 'model.final_norm', but "
                                          "LlavaModel has no 'final_norm'"):
        broken.resolve(tiny_llava.model, "norm")
    with pytest.raises(HallucError, match="hook point 'vision': llava declares no such module"):
        broken.resolve(tiny_llava.model, "vision")


def test_the_callers_processor_is_never_changed(tiny_llava, images):
    tokenizer = tiny_llava.processor.tokenizer
    tokenizer.padding_side = "right"
    try:
        texts = halluc.generate(tiny_llava, images, ["Describe the image.", "Hi"], "vcd", max_new_tokens=2)
        assert tokenizer.padding_side == "right" and len(texts) == 2
        inputs = tiny_llava.adapter.build_inputs(tiny_llava.processor, halluc.api.load_images(images), ["a b c", "a"])
        assert inputs["attention_mask"][1, 0] == 0  # the batch is left-padded all the same
    finally:
        tokenizer.padding_side = "left"


def test_a_score_mod_method_runs_end_to_end_on_the_reference(tiny_llava, images, monkeypatch):
    """The escape hatch through halluc.generate: same scores as the primitive it spells out, beams included,
    and on the reference even with the kernel forced."""
    impls = []
    dispatch = kernel_backend.attention

    def spy(*args, **kwargs):
        result = dispatch(*args, **kwargs)
        impls.append(result.impl)
        return result

    monkeypatch.setattr(kernel_backend, "attention", spy)
    monkeypatch.setenv("HALLUC_KERNEL", "triton")
    vanilla = first_logits(tiny_llava, images)
    assert impls == []  # no edit: plain SDPA
    assert torch.equal(first_logits(tiny_llava, images, "test-scalehead", factor=1.0), vanilla)
    modded = first_logits(tiny_llava, images, "test-scalehead", factor=4.0)
    assert impls and set(impls) == {"torch"}
    assert not torch.allclose(modded, vanilla)
    monkeypatch.setenv("HALLUC_KERNEL", "torch")
    torch.testing.assert_close(modded, first_logits(tiny_llava, images, "test-scalehead", factor=4.0,
                                                    via="primitive"), atol=1e-6, rtol=1e-6)
    beams = {via: halluc.generate(tiny_llava, images, ["Describe.", "What is it?"], "test-scalehead", factor=4.0,
                                  via=via, num_beams=2, max_new_tokens=3) for via in ("mod", "primitive")}
    assert beams["mod"] == beams["primitive"]
