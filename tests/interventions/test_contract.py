"""The contract every registered method keeps, on every family's tiny model, driven by the registry.

The families are every family record plus "generic": a tiny Aya Vision (a model class no record knows)
wrapped with `halluc.wrap`, which gets the generic adapter (image positions only).

For each method x family: refused with one clear line where it does not apply; otherwise
  * zero strength (`zero_params`) gives bit-identical scores to vanilla,
  * nothing is left behind (hooks, attention edits, attention backend, the processor) after a
    call or after an exception inside it,
  * a left-padded batch equals each sample alone (greedy),
  * every decoding mode it defines runs (greedy, sampling, beam), and the others are refused.
Methods act with their `example_params` (what makes them act on 2-layer tiny models).
"""
from __future__ import annotations

import pytest
import torch

import halluc
from halluc.errors import HallucError
from halluc.interventions import method_class, method_names
from halluc.interventions.base import MODES
from halluc.kernels.backend import current_edits
from halluc.modeling.generic import GENERIC, GENERIC_DECLARATION
from halluc.modeling.registry import families
from tests.conftest import TEST_DEVICE
from tests.helpers import PROMPTS, batch_and_singles, hook_count, tiny_aya_vision

METHODS = [n for n in method_names() if n != "none"]
FAMILIES = {f.name: f.tiny_name for f in families()}
MODE_ARGS = {"greedy": {}, "sample": {"do_sample": True, "seed": 3}, "beam": {"num_beams": 2}}


def applies(method: str, family: str) -> bool:
    adapter = GENERIC_DECLARATION if family == GENERIC else next(f for f in families() if f.name == family).adapter
    instance = method_class(method)(**method_class(method).example_params)
    return instance.supports(adapter.family) and not (instance.requires() - adapter.provides)


CASES = [(m, f) for m in METHODS for f in [*FAMILIES, GENERIC]]
SUPPORTED = [(m, f) for m, f in CASES if applies(m, f)]
REFUSED = [(m, f) for m, f in CASES if not applies(m, f)]


@pytest.fixture(scope="module")
def lvlms(tiny_models):
    """family -> its tiny LVLM; "generic" -> the wrapped Aya Vision."""
    wrapped = {}

    def get(family: str):
        if family != GENERIC:
            return tiny_models(FAMILIES[family])
        if GENERIC not in wrapped:
            with pytest.warns(UserWarning, match="generic adapter"):
                model, processor = tiny_aya_vision()
                wrapped[GENERIC] = halluc.wrap(model.to(TEST_DEVICE), processor, name="tiny-aya-vision")
        return wrapped[GENERIC]

    return get


def example(method: str) -> dict:
    return dict(method_class(method).example_params)


def state(lvlm) -> tuple:
    """Everything a method could leave behind on the model."""
    backend = str(lvlm.adapter.text_config(lvlm.model)._attn_implementation)
    return (hook_count(lvlm.model), dict(current_edits()), backend, lvlm.processor.tokenizer.padding_side,
            list(lvlm.active))


@pytest.mark.parametrize("method,family", REFUSED)
def test_refused_with_one_clear_line(lvlms, images, method, family):
    lvlm = lvlms(family)
    with pytest.raises(HallucError, match=f"method '{method}' (does not support|needs)"):
        halluc.generate(lvlm, images, PROMPTS, method, max_new_tokens=2, **example(method))


@pytest.mark.parametrize("method,family", [c for c in SUPPORTED if method_class(c[0]).zero_params is not None])
def test_zero_strength_is_bit_identical_to_vanilla(lvlms, images, method, family):
    lvlm = lvlms(family)
    vanilla = halluc.generate(lvlm, images, PROMPTS, max_new_tokens=3, return_scores=True)
    params = {**example(method), **method_class(method).zero_params}
    same = halluc.generate(lvlm, images, PROMPTS, method, max_new_tokens=3, return_scores=True, **params)
    assert same.tokens == vanilla.tokens and torch.equal(same.scores, vanilla.scores)


@pytest.mark.parametrize("method,family", SUPPORTED)
def test_nothing_left_behind_after_success_or_an_exception(lvlms, images, method, family, monkeypatch):
    lvlm = lvlms(family)
    halluc.generate(lvlm, images, PROMPTS, max_new_tokens=1)  # transformers adds its own hooks on first use
    before = state(lvlm)
    halluc.generate(lvlm, images, PROMPTS, method, max_new_tokens=2, **example(method))
    assert state(lvlm) == before

    def explode(*args, **kwargs):
        raise RuntimeError("generation failed")

    monkeypatch.setattr(lvlm.model, "generate", explode)
    with pytest.raises(RuntimeError, match="generation failed"):
        halluc.generate(lvlm, images, PROMPTS, method, max_new_tokens=2, **example(method))
    monkeypatch.undo()
    assert state(lvlm) == before


@pytest.mark.parametrize("method,family", SUPPORTED)
def test_batch_equals_single(lvlms, images, method, family):
    lvlm = lvlms(family)
    prompts = ["What is in the image? Describe it briefly.", "Hi"]  # different lengths: left padding
    batch, singles = batch_and_singles(lvlm, images, method, prompts=prompts, max_new_tokens=4, **example(method))
    assert batch == singles


@pytest.mark.parametrize("method,family", SUPPORTED)
def test_every_decoding_mode_runs_or_is_refused(lvlms, images, method, family):
    lvlm = lvlms(family)
    modes = method_class(method).modes
    for mode in MODES:
        call = lambda: halluc.generate(lvlm, images, PROMPTS, method, max_new_tokens=3,  # noqa: E731
                                       **MODE_ARGS[mode], **example(method))
        if mode in modes:
            texts = call()
            assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
        else:
            with pytest.raises(HallucError, match=f"method '{method}' supports .*not {mode}"):
                call()


def test_every_method_declares_what_the_contract_needs():
    for name in METHODS:
        cls = method_class(name)
        assert cls.paper and cls.formula and cls.cost, name
        assert set(cls.modes) <= set(MODES), name
        cls(**cls.example_params)  # valid
        if cls.zero_params is not None:
            assert cls(**{**cls.example_params, **cls.zero_params}).is_identity() or cls.kind == "decoding", name
    assert SUPPORTED and all(f in FAMILIES or f == GENERIC for _, f in SUPPORTED)


def test_the_support_matrix_is_what_the_contract_runs():
    """`halluc.support_matrix()` (the README's matrix, `halluc methods -v`) marks supported exactly the cases
    tested above, and refuses the others with the line `generate` gives."""
    matrix = {(r["method"], r["family"]): r["reason"] for r in halluc.support_matrix()}
    for method, family in CASES:
        assert (matrix[method, family] is None) == applies(method, family), (method, family)
        if matrix[method, family] is not None:
            assert matrix[method, family].startswith(f"method '{method}' ")


@pytest.fixture(scope="module")
def odd_images():
    """A landscape and a portrait image: different numbers of crops, tiles or sub-images per row."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(30, 40), (50, 20)]]


@pytest.mark.parametrize("method,family", [(m, f) for m, f in SUPPORTED if m in ("vcd", "ritual")])
def test_image_views_of_different_sizes_batch_equals_single(lvlms, odd_images, method, family):
    """Image views (VCD's noise, RITUAL's transforms) of images that split differently: the batch pads
    crops or sub-images, and a row still equals its sample alone."""
    lvlm = lvlms(family)
    batch, singles = batch_and_singles(lvlm, odd_images, method, prompts=PROMPTS, max_new_tokens=4,
                                       **example(method))
    assert batch == singles
