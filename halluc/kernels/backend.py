"""The "halluc" attention backend, registered with transformers' AttentionInterface.

With no edit active for a module it *is* SDPA (it calls transformers' own sdpa function), so a
model loaded with `attn_implementation={"text_config": "halluc", "vision_config": "sdpa"}` behaves
bit-identically to SDPA until a method activates an edit. Edits are looked up per attention module
in a ContextVar that `active_edits` sets and always resets, so nothing is left on the model
afterwards. The same block owns the cache of mask-pattern checks of its calls
(`halluc.kernels.masks.MaskChecks`), so no verdict outlives it. An edited call goes through
`halluc.kernels.dispatch.attention` (Triton on CUDA, the torch reference elsewhere, HALLUC_KERNEL to
force one); its optional outputs land in `edit.record` and, if set, `edit.on_output(module, edit.record)`.
Two edits keep plain SDPA: one that only reads (`reads_only`: SDPA, and the one attention row its side
output needs; where the reference would run, a decode call computes that row once and takes its output
from it too, `attention_reading`), and, where the reference would run, one made of a column bias alone (`bias_only`:
SDPA with the bias as a float mask; the same attention without materialising the scores). A call of an
edit made of a null key alone (`null_only`) whose queries all sit past the null key's rows (decode) is
plain SDPA too. A score scale (`AttentionEdit.scale`, and the per-module `scales` of `active_edits`, which
`attach` fills from edits that only scale, so they can share a module with another edit) multiplies the
call's `scaling` before any of this: a scale alone is SDPA at another temperature.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from halluc.kernels.dispatch import attention, resolve_impl
from halluc.kernels.edits import AttentionEdit, AttentionResult, pad_columns
from halluc.kernels.masks import MaskChecks, causal_mask
from halluc.kernels.reference import attention_reading, side_output

BACKEND = "halluc"


@dataclass(frozen=True)
class _Scope:
    """What one `active_edits` block sets: the edits per module and its own mask-check cache."""

    edits: Mapping[nn.Module, AttentionEdit] = field(default_factory=dict)
    scales: Mapping[nn.Module, float] = field(default_factory=dict)  # factor on each module's `scaling`
    mask_checks: MaskChecks | None = None  # None outside any block: every check is made afresh


_SCOPE: ContextVar[_Scope] = ContextVar("halluc_attention_edits", default=_Scope())


def halluc_attention(module: nn.Module, query, key, value, attention_mask, *, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function: q (B, H, Tq, D), k/v (B, Hkv, Tk, D) -> ((B, Tq, H, D), weights).

    The 5th parameter must be called `attention_mask` (Qwen2-VL's vision tower passes it by keyword).
    With an edit the second output is the per-head column mass (B, H, Tq) when the edit asks for it
    (what `output_attentions=True` then collects), else None.
    """
    scope = _SCOPE.get()
    edit = scope.edits.get(module)
    factor = scope.scales.get(module, 1.0) * (edit.scale if edit is not None else 1.0)
    plain = edit is None or edit.is_noop() or edit.scale_only  # SDPA, at temperature 1 / factor
    if plain and factor == 1.0:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    if dropout and module.training:
        raise RuntimeError("attention edits are inference-only (dropout > 0 in training mode)")
    scaling = factor * (getattr(module, "scaling", query.shape[-1] ** -0.5) if scaling is None else scaling)
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    assert edit is not None  # `plain` covers a module without an edit
    is_causal = kwargs.get("is_causal")
    is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    tq, tk = query.shape[2], key.shape[2]
    if is_causal and attention_mask is None and 1 < tq < tk:
        # transformers' convention (see sdpa_attention_forward): a causal call without a mask and with
        # more keys than queries is a prefill into an empty static cache; the extra keys are empty slots.
        key, value = key[:, :, :tq], value[:, :, :tq]
    evicted = edit.cached_positions + tq - tk if edit.cached_positions is not None else 0
    if evicted > 0:
        key, value, attention_mask = restore_evicted_keys(key, value, attention_mask, evicted, tq, is_causal)
    if edit.null_only and not edit.null_reaches(tq, key.shape[2]):  # no query has a null key (decode): plain
        out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                        **kwargs)
        result = AttentionResult(out, None, None, "sdpa")
    elif edit.reads_only and tq == 1 and resolve_impl(query.device) == "torch":  # decode on CPU: one row for both
        result = attention_reading(query, key, value, attention_mask, scaling=scaling, edit=edit)
    elif edit.reads_only:  # the attention is unchanged: SDPA, and the one row the side output reads
        out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                        **kwargs)
        side = side_output(query, key, value, attention_mask, scaling=scaling, edit=edit, is_causal=is_causal)
        result = AttentionResult(out, None, None, "sdpa", side)
    elif edit.bias_only and resolve_impl(query.device) == "torch":  # SDPA adds the bias to its mask
        bias = edit.column_bias
        assert bias is not None  # bias_only: a column bias and nothing else
        if not (bias.dim() == 2 and bias.shape[0] == query.shape[0] and bias.shape[1] <= key.shape[2]  # a row per
                and bias.dtype == torch.float32 and bias.device == query.device):  # batch row: no copy per call
            bias = edit.column_tensors(query.shape[0], query.shape[1], query.device).bias  # (B, Tc) fp32
            assert bias is not None  # built from the column bias
        bias = pad_columns(bias, key.shape[2], 0.0)[:, None, None, :].to(query.dtype)  # (B, 1, 1, Tk): all heads, rows
        out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                        position_bias=bias, **kwargs)
        result = AttentionResult(out, None, None, "sdpa")
    else:
        result = attention(query, key, value, attention_mask, scaling=scaling, edit=edit, is_causal=is_causal,
                           mask_checks=scope.mask_checks)
    edit.record.update(result)
    if edit.on_output is not None:
        edit.on_output(module, edit.record)
    return result.out, result.column_mass


def restore_evicted_keys(key, value, attention_mask, evicted: int, tq: int, is_causal: bool):
    """The keys a sliding-window cache dropped, put back in front as masked zeros, so that key j is
    position j again (the edit's column tensors count positions).

    key/value (B, Hkv, Tk, D) -> (B, Hkv, evicted + Tk, D); attention_mask None or (B, 1, Tq, Tk), bool
    or additive float -> (B, 1, Tq, evicted + Tk), the restored keys masked out.
    """
    b, tk = key.shape[0], key.shape[2]
    if attention_mask is None:  # no padding: what the call would have seen (causal, or everything)
        visible = causal_mask(tq, tk, key.device) if is_causal else torch.ones(tq, tk, dtype=torch.bool,
                                                                                device=key.device)
        attention_mask = visible[None, None].expand(b, 1, tq, tk)
    if attention_mask.dtype == torch.bool:
        hidden = attention_mask.new_zeros(*attention_mask.shape[:-1], evicted)
    else:
        hidden = attention_mask.new_full((*attention_mask.shape[:-1], evicted), float("-inf"))
    front = key.new_zeros(*key.shape[:2], evicted, key.shape[-1])
    key, value = torch.cat([front, key], dim=2), torch.cat([front.to(value.dtype), value], dim=2)
    return key, value, torch.cat([hidden, attention_mask], dim=-1)


def register_backend() -> str:
    """Register the backend (idempotent). The mask function must be registered too, or the
    model hands the function no padding mask at all (see the spec's pitfall)."""
    AttentionInterface.register(BACKEND, halluc_attention)
    AttentionMaskInterface.register(BACKEND, sdpa_mask)
    return BACKEND


@contextlib.contextmanager
def active_edits(edits: Mapping[nn.Module, AttentionEdit],
                 scales: Mapping[nn.Module, float] | None = None) -> Iterator[None]:
    """Activate per-module edits, and factors on their score `scaling`, for the duration of the block.
    Nested blocks merge per module: an inner block's edit for a module replaces the outer block's edit and
    scale there (an auxiliary pass's identity edits switch everything off). Each block checks mask patterns
    with a cache of its own, dropped when it exits."""
    outer = _SCOPE.get()
    kept = {m: f for m, f in outer.scales.items() if m not in edits}
    token = _SCOPE.set(_Scope({**outer.edits, **edits}, {**kept, **(scales or {})}, MaskChecks()))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def current_edits() -> Mapping[nn.Module, AttentionEdit]:
    return _SCOPE.get().edits


def current_mask_checks() -> MaskChecks | None:
    """The innermost block's mask-check cache (None outside any `active_edits` block)."""
    return _SCOPE.get().mask_checks
