from dataclasses import dataclass

import pytest
import torch

from halluc.errors import HallucError
from halluc.interventions import Method, make_method, make_methods, method_names, param, register
from halluc.interventions.registry import unregister


@pytest.fixture
def toy_methods():
    @dataclass(frozen=True)
    class Scale(Method):
        name = "test-scale"
        alpha: float = param(1.0, low=0.0, high=4.0, doc="strength")
        layers: int = param(2, low=1)
        mode: str = param("paper", choices=("paper", "code"))
        enabled: bool = param(True)

    @dataclass(frozen=True)
    class Other(Method):
        name = "test-other"
        kind = "decoding"
        alpha: float = param(0.5, low=0.0, open_low=True)

    register(Scale), register(Other)
    yield Scale, Other
    unregister("test-scale"), unregister("test-other")


def test_none_is_registered():
    assert "none" in method_names()
    assert make_method("none").is_identity()


def test_duplicate_name_raises(toy_methods):
    with pytest.raises(ValueError, match="already registered"):
        register(toy_methods[0])


def test_unknown_method_lists_choices_and_suggests():
    with pytest.raises(HallucError, match=r"unknown method 'nnoe' \(did you mean 'none'\?\); choices: .*none"):
        make_method("nnoe")


def test_parameters_validated(toy_methods):
    assert make_method("test-scale", {"alpha": 2}).alpha == 2
    with pytest.raises(HallucError, match=r"test-scale: parameter 'alpha' must be in \[0.0, 4.0\]; got 5"):
        make_method("test-scale", {"alpha": 5})
    with pytest.raises(HallucError, match="must be an integer"):
        make_method("test-scale", {"layers": 1.5})
    with pytest.raises(HallucError, match="must be one of paper, code"):
        make_method("test-scale", {"mode": "other"})
    with pytest.raises(HallucError, match="must be a number"):
        make_method("test-scale", {"alpha": "big"})
    with pytest.raises(HallucError, match="must be true or false"):
        make_method("test-scale", {"enabled": 1})
    with pytest.raises(HallucError, match=r"must be in \(0.0, inf\]"):
        make_method("test-other", {"alpha": 0.0})


def test_unknown_parameter_names_valid_ones(toy_methods):
    with pytest.raises(HallucError, match="method 'test-scale' has no parameter 'beta'; "
                                          "its parameters: alpha, enabled, layers, mode"):
        make_method("test-scale", {"beta": 1})


def test_stacked_parameters_route_by_name_and_prefix(toy_methods):
    scale, other = make_methods(["test-scale", "test-other"], {"layers": 3, "test-other.alpha": 2.0})
    assert (scale.layers, scale.alpha, other.alpha) == (3, 1.0, 2.0)
    with pytest.raises(HallucError, match="ambiguous between test-scale, test-other"):
        make_methods(["test-scale", "test-other"], {"alpha": 1.0})
    with pytest.raises(HallucError, match="names method 'vcd', which is not selected"):
        make_methods(["test-scale"], {"vcd.alpha": 1.0})
    with pytest.raises(HallucError, match="listed twice"):
        make_methods(["test-scale", "test-scale"])


def test_none_is_dropped_when_stacked(toy_methods):
    assert [m.name for m in make_methods(["none", "test-scale"])] == ["test-scale"]
    assert [m.name for m in make_methods("none")] == ["none"]


def test_methods_are_frozen(toy_methods):
    m = make_method("test-scale")
    with pytest.raises(Exception):
        m.alpha = 3.0


def test_parameters_listing(toy_methods):
    rows = {p["name"]: p for p in toy_methods[0].parameters()}
    assert rows["alpha"]["default"] == 1.0 and rows["alpha"]["high"] == 4.0 and rows["alpha"]["doc"] == "strength"


def test_no_method_parameter_shares_a_name_with_a_generate_argument():
    """`halluc.generate(m, ..., method="ritual", seed=7)` must mean the sampling seed, never a method's."""
    import dataclasses

    from halluc.interventions import method_class
    from halluc.interventions.base import DECODING_ARGUMENTS

    for name in method_names():
        clash = {f.name for f in dataclasses.fields(method_class(name))} & DECODING_ARGUMENTS
        assert not clash, f"{name}: {clash}"

    @dataclass(frozen=True)
    class Seeded(Method):
        name = "test-seeded"
        seed: int = param(0)

    with pytest.raises(ValueError, match="parameter 'seed' has the name of a generate\\(\\) argument"):
        register(Seeded)
    assert "test-seeded" not in method_names()


def test_method_seeds_reach_the_method_and_the_sampling_seed_stays_separate(tiny_llava, images):
    import halluc

    prompts = ["What is it?", "Describe it."]
    base = halluc.generate(tiny_llava, images, prompts, "ritual", max_new_tokens=4, seed=7)
    assert halluc.generate(tiny_llava, images, prompts, "ritual", view_seed=0, max_new_tokens=4, seed=7) == base
    other = [halluc.generate(tiny_llava, images, prompts, "ritual", view_seed=s, max_new_tokens=4, return_scores=True)
             .scores for s in (1, 2)]
    assert not torch.equal(other[0], other[1])  # the view seed changes the transformed view
    with pytest.raises(HallucError,
                       match="has no parameter 'seed'; its parameters: alpha, beta, noise_seed, noise_step"):
        make_methods("vcd", {"seed": 3})


def test_an_alias_expands_to_its_stack():
    from halluc.interventions import aliases

    assert aliases()["ritual-vcd"] == ("ritual", "vcd")
    assert [m.name for m in make_methods("ritual-vcd", {"vcd.alpha": 2.0})] == ["ritual", "vcd"]
    assert make_methods("ritual-vcd", {"vcd.alpha": 2.0})[1].alpha == 2.0
    with pytest.raises(HallucError, match="ambiguous between ritual, vcd"):
        make_methods("ritual-vcd", {"alpha": 2.0})
