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


def test_the_check_names_an_argument_a_release_requires_and_halluc_does_not_pass(monkeypatch):
    from transformers.generation.utils import GenerationMixin

    def running_beams(self, topk_log_probs, topk_running_sequences, topk_running_beam_indices,
                      next_token_hits_stopping_criteria, num_beams, vocab_size, **kwargs):
        raise AssertionError("not called")

    monkeypatch.setattr(GenerationMixin, "_get_running_beams_for_next_iteration", running_beams)
    assert hf_compat.check_internals() == [
        "GenerationMixin._get_running_beams_for_next_iteration requires vocab_size, which halluc does not pass"]


def test_top_k_continuations_gives_vocab_size_to_a_release_that_requires_it():
    """transformers 5.17's `_get_top_k_continuations` takes vocab_size; later releases derive it."""
    import torch

    class Release517:
        def _get_top_k_continuations(self, accumulated_log_probs, num_beams, vocab_size, batch_size):
            return vocab_size

    class Later:
        def _get_top_k_continuations(self, accumulated_log_probs, num_beams, batch_size, **kwargs):
            return kwargs

    scores = torch.zeros(1, 3 * 50)  # (batch, beams x vocabulary)
    assert hf_compat.top_k_continuations(Release517(), accumulated_log_probs=scores, num_beams=3, batch_size=1) == 50
    assert hf_compat.top_k_continuations(Later(), accumulated_log_probs=scores, num_beams=3, batch_size=1) == {}


def test_no_other_module_calls_private_generation_internals():
    import halluc.engine.opera_search as search

    source = inspect.getsource(search)
    for name in hf_compat.BEAM_HELPERS:
        assert f".{name}(" not in source, name
