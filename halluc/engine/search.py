"""A search that replaces transformers' own loop (OPERA's beam search), as a method supplies it.

`model.generate(custom_generate=search)` calls it with HF's prepared inputs, processors, stopping
criteria and generation config; `decoding()` says which HF decoding settings it needs (e.g. its
own beam count). `one_sample` says whether the search takes one sample only; generation runs the batch
one sample at a time unless the method declares `batched_search` and runs alone.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from halluc.engine.decoding import Decoding


@runtime_checkable
class Search(Protocol):
    one_sample: bool

    def decoding(self, requested: Decoding) -> Decoding:
        """The decoding settings HF's generate must be called with."""

    def __call__(self, model, input_ids, logits_processor, stopping_criteria, generation_config,
                 synced_gpus: bool = False, **model_kwargs) -> Any:
        """The search loop; returns a `GenerateBeamDecoderOnlyOutput`-like object with `sequences`."""
