"""The private transformers internals OPERA's search relies on are all where halluc expects them.

When a transformers release moves one, this fails naming it; the fix then goes into
`halluc/modeling/hf_compat.py` alone."""
import inspect

from halluc.modeling import hf_compat


def test_every_private_internal_halluc_calls_exists_with_the_keywords_it_passes():
    assert hf_compat.check_internals() == []


def test_the_check_names_what_a_release_moved(monkeypatch):
    from transformers.generation.utils import GenerationMixin

    monkeypatch.delattr(GenerationMixin, "_get_top_k_continuations")
    assert "GenerationMixin._get_top_k_continuations" in hf_compat.check_internals()


def test_no_other_module_calls_private_generation_internals():
    import halluc.engine.opera_search as search

    source = inspect.getsource(search)
    for name in hf_compat.BEAM_HELPERS:
        assert f".{name}(" not in source, name
