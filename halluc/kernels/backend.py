"""The "halluc" attention backend, registered with transformers' AttentionInterface.

With no edit active for a module it *is* SDPA (it calls transformers' own sdpa function), so a
model loaded with `attn_implementation={"text_config": "halluc"}` behaves exactly like SDPA until a
method activates an edit. Edits are looked up per attention module in a ContextVar that
`active_edits` sets and always resets, so nothing is left on the model afterwards.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from halluc.kernels.edits import AttentionEdit
from halluc.kernels.reference import attention_reference

BACKEND = "halluc"
_EDITS: ContextVar[Mapping[nn.Module, AttentionEdit]] = ContextVar("halluc_attention_edits", default={})


def halluc_attention(module: nn.Module, query, key, value, attention_mask, *, scaling=None, dropout=0.0, **kwargs):
    edit = _EDITS.get().get(module)
    if edit is None or edit.is_noop():
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    scaling = module.scaling if scaling is None else scaling
    out = attention_reference(query, key, value, attention_mask, scaling=scaling, edit=edit,
                              is_causal=getattr(module, "is_causal", True))
    return out, None


def register_backend() -> str:
    """Register the backend (idempotent). The mask function must be registered too, or the
    model hands the function no padding mask at all (see the spec's pitfall)."""
    AttentionInterface.register(BACKEND, halluc_attention)
    AttentionMaskInterface.register(BACKEND, sdpa_mask)
    return BACKEND


@contextlib.contextmanager
def active_edits(edits: Mapping[nn.Module, AttentionEdit]) -> Iterator[None]:
    """Activate per-module edits for the duration of the block (nested blocks merge)."""
    token = _EDITS.set({**_EDITS.get(), **edits})
    try:
        yield
    finally:
        _EDITS.reset(token)


def current_edits() -> Mapping[nn.Module, AttentionEdit]:
    return _EDITS.get()
