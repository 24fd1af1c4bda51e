"""Every private transformers internal halluc calls, in one place (OPERA's search loop uses them).

transformers keeps its beam-search bookkeeping in private `GenerationMixin` methods and moves or
renames them between releases. halluc calls them only through the wrappers below, and
`check_internals()` (run by the test suite) fails loudly, naming each one, when a release moves
them: the fix is then here and nowhere else.
"""
from __future__ import annotations

import inspect
from typing import Any

from transformers.generation.utils import GenerationMixin

# private method -> keyword arguments halluc passes to it
BEAM_HELPERS = {
    "_prefill": (),
    "_update_model_kwargs_for_generation": ("num_new_tokens",),
    "_get_top_k_continuations": ("accumulated_log_probs", "running_sequences", "running_beam_indices", "cur_len",
                                 "decoder_prompt_len", "do_sample", "beams_to_keep", "num_beams", "batch_size"),
    "_get_running_beams_for_next_iteration": ("topk_log_probs", "topk_running_sequences",
                                              "topk_running_beam_indices", "next_token_hits_stopping_criteria",
                                              "num_beams"),
    "_update_finished_beams": ("sequences", "topk_running_sequences", "beam_scores", "topk_log_probs",
                               "beam_indices", "topk_running_beam_indices", "is_early_stop_heuristic_unsatisfied",
                               "is_sent_finished", "next_token_hits_stopping_criteria", "top_num_beam_mask",
                               "num_beams", "cur_len", "decoder_prompt_len", "length_penalty", "early_stopping"),
    "_check_early_stop_heuristic": ("is_early_stop_heuristic_unsatisfied", "running_beam_scores", "beam_scores",
                                    "is_sent_finished", "cur_len", "max_length", "decoder_prompt_len",
                                    "early_stopping", "length_penalty"),
    "_beam_search_has_unfinished_sequences": (),
}
# arguments a wrapper below fills in itself where a release requires them (transformers 5.17 wants vocab_size,
# later releases derive it from the scores' width)
FILLED = {"_get_top_k_continuations": ("vocab_size",)}
# helpers called with keywords only: any other argument a release requires is missing from the call
KEYWORD_CALLS = ("_get_top_k_continuations", "_get_running_beams_for_next_iteration", "_update_finished_beams",
                 "_check_early_stop_heuristic")
# public cache methods the search relies on (every Cache subclass generate builds has them)
CACHE_METHODS = ("batch_repeat_interleave", "batch_select_indices", "crop", "get_seq_length")


def check_internals() -> list[str]:
    """What this transformers release lacks of the above (empty when everything is in place)."""
    missing = []
    for name, keywords in BEAM_HELPERS.items():
        fn = getattr(GenerationMixin, name, None)
        if fn is None:
            missing.append(f"GenerationMixin.{name}")
            continue
        params = inspect.signature(fn).parameters
        missing += [f"GenerationMixin.{name}(..., {k}=)" for k in keywords if k not in params]
        if name in KEYWORD_CALLS:
            passed = {"self", *keywords, *FILLED.get(name, ())}
            missing += [f"GenerationMixin.{name} requires {p.name}, which halluc does not pass"
                        for p in params.values() if p.name not in passed and p.default is inspect.Parameter.empty
                        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    from transformers import DynamicCache

    missing += [f"DynamicCache.{m}" for m in CACHE_METHODS if not hasattr(DynamicCache, m)]
    return missing


def eos_and_pad(config: Any) -> tuple[Any, Any]:
    """The eos and pad token tensors generate prepared on the generation config."""
    return config._eos_token_tensor, config._pad_token_tensor


def prefill(model, input_ids, generation_config, model_kwargs):
    return model._prefill(input_ids, generation_config, model_kwargs)


def update_model_kwargs(model, outputs, model_kwargs: dict, num_new_tokens: int = 1) -> dict:
    return model._update_model_kwargs_for_generation(outputs, model_kwargs, num_new_tokens=num_new_tokens)


def top_k_continuations(model, **kwargs):
    if "vocab_size" in inspect.signature(model._get_top_k_continuations).parameters:  # transformers 5.17
        kwargs["vocab_size"] = kwargs["accumulated_log_probs"].shape[-1] // kwargs["num_beams"]
    return model._get_top_k_continuations(**kwargs)


def running_beams_for_next_iteration(model, **kwargs):
    return model._get_running_beams_for_next_iteration(**kwargs)


def update_finished_beams(model, **kwargs):
    return model._update_finished_beams(**kwargs)


def check_early_stop_heuristic(model, **kwargs):
    return model._check_early_stop_heuristic(**kwargs)


def has_unfinished_sequences(model, is_early_stop_heuristic_unsatisfied, is_sent_finished, hits, early_stopping):
    return model._beam_search_has_unfinished_sequences(is_early_stop_heuristic_unsatisfied, is_sent_finished, hits,
                                                       early_stopping)
