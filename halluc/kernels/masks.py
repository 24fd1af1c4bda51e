"""Reading transformers' attention masks as the kernel's per-column padding vector.

With `sdpa_mask` registered for the backend, the model hands the attention function either None
(pure causal, no padding) or a 4-D bool mask (B, 1, Tq, Tk). For causal LMs with (left or right)
padding that mask is exactly `causal & padding[b, j]`, and the padding vector is its last query row
`attention_mask[:, 0, -1, :]` (the last query sits at key position Tk - 1 and sees every column
the causal rule allows). Masks of any other pattern (Gemma3's bidirectional image block, sliding
windows, float masks, per-head masks) raise `MaskNotSupported`, and the dispatcher falls back to
the torch reference, which takes any mask.
"""
from __future__ import annotations

import torch


class MaskNotSupported(ValueError):
    """The attention mask is not `causal & per-column padding`; the kernel cannot express it."""


_LAST: dict = {}  # one entry: the last mask checked (all layers of one forward share the mask object)


def causal_mask(tq: int, tk: int, device) -> torch.Tensor:
    """(Tq, Tk) bool: query i sits at key position tk - tq + i and sees keys <= that position."""
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(tk - tq)


def padding_columns(attention_mask: torch.Tensor | None, tq: int, tk: int, is_causal: bool) -> torch.Tensor | None:
    """(B, Tk) bool keep-vector equivalent to `attention_mask`, or None when there is no mask.

    Raises MaskNotSupported when the mask is not `causal (if is_causal) & padding columns`.
    The check costs one comparison per distinct mask object (cached), so once per forward.
    """
    if attention_mask is None:
        return None
    m = attention_mask
    if m.dtype != torch.bool or m.dim() != 4 or m.shape[1] != 1 or tuple(m.shape[-2:]) != (tq, tk):
        raise MaskNotSupported(f"mask {tuple(m.shape)} {m.dtype} is not a (B, 1, {tq}, {tk}) bool mask")
    pad = m[:, 0, -1, :]
    if tq == 1:  # the single query row is the padding vector (causality allows every column)
        return pad
    key = (id(m), m._version, m.data_ptr(), tq, tk, is_causal)
    hit = _LAST.get("key")
    if hit == key:
        ok = _LAST["ok"]
    else:
        expected = pad[:, None, :].expand(-1, tq, -1)
        if is_causal:
            expected = expected & causal_mask(tq, tk, m.device)
        ok = torch.equal(m[:, 0], expected)
        _LAST.clear()
        _LAST.update(key=key, ok=ok, ref=m)  # keep `m` alive so its id is not reused
    if not ok:
        raise MaskNotSupported("mask is not causal & per-column padding")
    return pad
