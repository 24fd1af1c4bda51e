"""Reading transformers' attention masks as the kernel's per-column padding vector.

With `sdpa_mask` registered for the backend, the model hands the attention function either None
(pure causal, no padding) or a 4-D bool mask (B, 1, Tq, Tk). For causal LMs with (left or right)
padding that mask is exactly `causal & padding[b, j]`, and the padding vector is its last query row
`attention_mask[:, 0, -1, :]` (the last query sits at key position Tk - 1 and sees every column
the causal rule allows). Masks of any other pattern (Gemma3's bidirectional image block, sliding
windows, float masks, per-head masks) raise `MaskNotSupported`, and the dispatcher falls back to
the torch reference, which takes any mask.

Checking the pattern compares the whole mask (and, on CUDA, waits for the result). All layers of one
forward share one mask object, so a `MaskChecks` remembers the verdicts; it is owned by whoever
scopes the calls (the backend keeps one per `active_edits` block), never by this module.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


class MaskNotSupported(ValueError):
    """The attention mask is not `causal & per-column padding`; the kernel cannot express it."""


@dataclass(eq=False)
class MaskChecks:
    """Verdicts of the pattern check on the masks of one scope, keyed by mask identity.

    An entry keeps its mask alive, so the mask's id cannot be reused by another tensor while the entry
    lives; the version counter catches in-place edits. Inference tensors have no version counter: they
    are keyed by identity alone (transformers builds a fresh mask per forward and never edits it).
    At most `size` entries are kept (the oldest goes first), so a long scope holds few masks.
    """

    size: int = 4
    _entries: dict = field(default_factory=dict, repr=False)  # key -> (verdict, mask)

    def __len__(self) -> int:
        return len(self._entries)

    def verdict(self, mask: torch.Tensor, tq: int, tk: int, is_causal: bool) -> bool:
        key = (id(mask), None if mask.is_inference() else mask._version, mask.data_ptr(), tq, tk, is_causal)
        if key not in self._entries:
            if len(self._entries) >= self.size:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = (is_padding_pattern(mask, tq, tk, is_causal), mask)
        return self._entries[key][0]


def causal_mask(tq: int, tk: int, device) -> torch.Tensor:
    """(Tq, Tk) bool: query i sits at key position tk - tq + i and sees keys <= that position."""
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(tk - tq)


def is_padding_pattern(mask: torch.Tensor, tq: int, tk: int, is_causal: bool) -> bool:
    """Whether the (B, 1, Tq, Tk) bool `mask` is `causal (if is_causal) & its last row's columns`."""
    expected = mask[:, 0, -1, None, :].expand(-1, tq, -1)  # (B, Tq, Tk)
    if is_causal:
        expected = expected & causal_mask(tq, tk, mask.device)
    return torch.equal(mask[:, 0], expected)


def padding_columns(attention_mask: torch.Tensor | None, tq: int, tk: int, is_causal: bool,
                    checks: MaskChecks | None = None) -> torch.Tensor | None:
    """(B, Tk) bool keep-vector equivalent to `attention_mask`, or None when there is no mask.

    Raises MaskNotSupported when the mask is not `causal (if is_causal) & padding columns`.
    With `checks` the pattern is checked once per distinct mask of that scope; without, at every call.
    """
    if attention_mask is None:
        return None
    m = attention_mask
    if m.dtype != torch.bool or m.dim() != 4 or m.shape[1] != 1 or tuple(m.shape[-2:]) != (tq, tk):
        raise MaskNotSupported(f"mask {tuple(m.shape)} {m.dtype} is not a (B, 1, {tq}, {tk}) bool mask")
    pad = m[:, 0, -1, :]
    if tq == 1:  # the single query row is the padding vector (causality allows every column)
        return pad
    ok = checks.verdict(m, tq, tk, is_causal) if checks is not None else is_padding_pattern(m, tq, tk, is_causal)
    if not ok:
        raise MaskNotSupported("mask is not causal & per-column padding")
    return pad
