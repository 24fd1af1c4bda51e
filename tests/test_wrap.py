"""halluc.wrap: a model the user built or loaded themselves is the same LVLM as after halluc.load;
unknown model classes get the generic adapter, which runs the position-only methods and refuses the others."""
from __future__ import annotations

import re

import pytest
import torch

import halluc
from halluc.errors import HallucError
from halluc.modeling.generic import GenericAdapter
from halluc.modeling.registry import family
from halluc.modeling.tiny import build_tiny, draw_zero_initialised
from tests.helpers import PROMPTS, tiny_aya_vision

# PAI acts on the 2-layer tiny models only with explicit layers (its default starts at layer 2)
METHODS = {"vcd": {}, "pai": {"layers": (0, 1)}, "vhr": {}}


def by_hand(name: str, seed: int = 0):
    """(model, processor) built the way a user would: the family's transformers config and classes, the
    model's own attention (SDPA everywhere), weights drawn from `seed`."""
    record = family(name)
    config, processor, model_class = record.build_tiny()
    torch.manual_seed(seed)
    model = model_class(config).eval()
    draw_zero_initialised(model, record.tiny_random)  # as the tiny builder does (Gemma 3's projection)
    return model, processor


@pytest.mark.parametrize("name", ["llava", "qwen2_vl", "gemma3"])
def test_wrapped_model_built_from_a_config_gives_what_load_gives(name, images, tiny_models):
    loaded = tiny_models(family(name).tiny_name)
    with torch.random.fork_rng(devices=[]):
        model, processor = by_hand(name)
    wrapped = halluc.wrap(model, processor)
    assert wrapped.adapter is loaded.adapter and wrapped.family == name
    assert model.config.text_config._attn_implementation == "sdpa"  # the model keeps its own attention
    for method, params in METHODS.items():
        ours = halluc.generate(wrapped, images, PROMPTS, method, max_new_tokens=4, return_scores=True, **params)
        theirs = halluc.generate(loaded, images, PROMPTS, method, max_new_tokens=4, return_scores=True, **params)
        assert ours.tokens == theirs.tokens, method
        torch.testing.assert_close(ours.scores, theirs.scores, atol=1e-5, rtol=1e-5)
    assert model.config.text_config._attn_implementation == "sdpa"  # PAI switched to halluc only while it ran
    with halluc.apply(wrapped, "vhr"):  # `apply` works on wrapped models too
        assert halluc.generate(wrapped, images, PROMPTS, max_new_tokens=4) == \
            halluc.generate(loaded, images, PROMPTS, "vhr", max_new_tokens=4)


def test_wrap_needs_the_processor():
    model, _ = build_tiny("llava")
    with pytest.raises(HallucError, match="needs the model's processor"):
        halluc.wrap(model, None)


# ---- the generic adapter -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def aya():
    with pytest.warns(UserWarning, match=r"generic adapter .*Available methods: ") as caught:
        aya = halluc.wrap(*tiny_aya_vision(), name="tiny-aya-vision")
    said = re.search(r"Available methods: (?P<methods>[^;]+); controls: (?P<controls>[^;]+); "
                     r"refused: (?P<refused>[^.]+)\.", str(caught[0].message))
    methods, controls, refused = (said.group(k).split(", ") for k in ("methods", "controls", "refused"))
    assert {"deco", "icd", "pai", "vcd", "vhr", "vista", "ritual-vcd"} <= set(methods)
    assert controls == ["apc", "logit-shift", "yes-bias", "yes-prompt"]
    assert {"agla", "cca", "damro", "only"} <= set(refused) and not set(refused) & set(methods)
    assert set(methods + controls) == set(halluc.api.available_methods(aya))
    return aya


def test_unknown_class_gets_the_generic_adapter_and_says_what_runs(aya):
    assert isinstance(aya.adapter, GenericAdapter) and aya.family == "generic:aya_vision"
    available = halluc.available_methods(aya)
    assert {"deco", "farsight", "icd", "m3id", "memvr", "opera", "pai", "ritual", "sid", "tame", "vaf", "var",
            "vcd", "vhr", "vista", "vti", "ritual-vcd", "apc", "yes-prompt"} <= set(available)
    assert not {"agla", "cca", "damro", "only"} & set(available)
    assert halluc.available_methods("generic") == halluc.available_methods(aya)


@pytest.mark.parametrize("method,needs", [("agla", "needs 2-D image grids, which the generic:aya_vision adapter"),
                                          ("cca", "does not support generic:aya_vision models"),
                                          ("damro", "does not support generic:aya_vision models")])
def test_unknown_class_refuses_what_needs_a_record(aya, images, method, needs):
    with pytest.raises(HallucError, match=f"method '{method}' {needs}"):
        halluc.generate(aya, images, PROMPTS, method, max_new_tokens=2)
    with pytest.raises(HallucError, match=f"method '{method}' {needs}"):
        with halluc.apply(aya, method):
            pass


def test_unknown_class_runs_the_position_only_methods(aya, images):
    vanilla = halluc.generate(aya, images, PROMPTS, max_new_tokens=4, return_scores=True)
    runs = [("vcd", {}), ("pai", {"layers": (0, 1)}), ("vhr", {}), ("var", {"layers": (0, 1), "tau": 2.0}),
            ("vista", {}), ("ritual", {}), ("deco", {}), ("memvr", {"threshold": 0.0}),
            ("sid", {"select_layer": 0}), ("vaf", {}), ("icd", {}), ("tame", {}), ("farsight", {})]
    for method, params in runs:
        edited = halluc.generate(aya, images, PROMPTS, method, max_new_tokens=4, return_scores=True, **params)
        assert len(edited.texts) == 2 and edited.scores.shape == vanilla.scores.shape
        if method != "var":  # VAR acts only where the random model has sink tokens
            assert not torch.equal(edited.scores, vanilla.scores), method
