"""What an attention-editing method asks of one decoder layer's attention (the kernel's inputs).

Shapes: B = batch rows as the model sees them, H = query heads, Tq = query rows of this call,
Tk = key length so far, Tc = the prompt length the column tensors were built over (Tc <= Tk).
Column tensors are given over the prompt (B, Tc) (or (1, Tc), broadcast over the batch); keys
generated after the prompt are never image or sink columns and get no bias or boost, so the
implementations treat columns >= Tc as plain text columns (`pad_columns` spells that out).

The edit is applied in this order, per (batch row b, head h, query row i, key column j), on
scores s = scaling * q_i . k_j (computed in fp32):

    1. PAI boost     s += alpha_j * |s|          alpha_j = `pai_alpha` on image columns (float) or the
                                                 per-column tensor; only the last query row of the
                                                 call when `pai_last_row_only`
    2. head bias     s += head_bias[b, h]        on image columns
    3. column bias   s += column_bias[b, j]      (-inf removes key j)
    4. masks         causal (query i sits at key position Tk - Tq + i) and the attention mask
    5. softmax       a = softmax(s); a fully masked row is all zeros (its output is 0)
    6. VAR           on selected (b, h, i) rows: sinks keep share `var_p`, the rest moves to
                     non-sink image columns in proportion to their attention (see `AttentionEdit`)
    7. output        o = a @ v; optional outputs are computed from this final `a`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch


class AttentionResult(NamedTuple):
    """What one attention call returns (both implementations).

    out            (B, Tq, H, D) in the query dtype (transformers' layout: heads after the query axis)
    image_mass     (B, H, Tq) fp32 share of each row's final attention on image columns, or None
    attention_row  (B, H, Tk) fp32 the final attention row when Tq == 1, or None
    impl           "triton" or "torch": which implementation produced it
    """

    out: torch.Tensor
    image_mass: torch.Tensor | None
    attention_row: torch.Tensor | None
    impl: str


@dataclass(eq=False)
class AttentionRecord:
    """Mutable record the backend fills after each attention call that ran with the edit.

    It keeps only the latest call; use `AttentionEdit.on_output` to collect every call (e.g. every
    decode step).
    """

    image_mass: torch.Tensor | None = None  # (B, H, Tq) fp32, when `return_image_mass`
    attention_row: torch.Tensor | None = None  # (B, H, Tk) fp32, when `return_attention_row` and Tq == 1
    calls: int = 0  # attention calls made with this edit so far
    impl: str | None = None  # implementation of the latest call

    def update(self, result: AttentionResult) -> None:
        self.image_mass = result.image_mass
        self.attention_row = result.attention_row
        self.impl = result.impl
        self.calls += 1

    def clear(self) -> None:
        self.image_mass = self.attention_row = self.impl = None
        self.calls = 0


@dataclass(eq=False)
class AttentionEdit:
    """Edit of one attention module. Every field defaults to its identity value.

    Columns:
        image_columns  (B, Tc) bool; image-token key columns. Identity: None (no image columns).
                       Required by the PAI float boost, `head_bias`, VAR and `return_image_mass`
                       (with None the image mass is 0).
        column_bias    (B, Tc) float, added to the scores of key column j; -inf removes the key.
                       Identity: None (or zeros).
    Per-head bias:
        head_bias      (H,) or (B, H) float, added to the scores of image columns in head h.
                       Identity: None (or zeros). log(c) scales head h's unnormalised image attention by c.
    PAI (Liu et al., ECCV 2024): s += alpha * |s| on image columns, before any bias.
        pai_alpha      float (applied on `image_columns`) or a (B, Tc) float tensor of per-column
                       alphas (e.g. PAINT's two token groups; 0 = no boost). Identity: 0.0.
        pai_last_row_only  boost only the last query row of each call (PAI's default: the token
                       being predicted; in decode that is the only row). Default True.
    VAR (Kang et al., ICLR 2025), on the post-softmax row a of (b, h, i), released-code semantics:
        var_sink_columns  (B, Tc) bool; sink columns (visual sinks are those that are also image
                       columns; the others, e.g. BOS, are text sinks). Identity: None (VAR off).
        var_p          share of attention sink columns KEEP (the code's p; the paper's p is 1 - this).
                       Identity: 1.0. Default 0.6.
        var_rho        a row is selected when visual-sink attention / image attention <= var_rho ...
        var_summ       ... and image attention >= var_summ ...
        var_query_start ... and the query's key position Tk - Tq + i >= var_query_start[b].
                       int or (B,) long; None = one past the last image column of each row (prefill
                       rows after the image; decode rows always qualify).
                       Rows with no attention on non-sink image columns are never selected.
        On a selected row: a[sinks] *= var_p; a[non-sink image] *= 1 + (1 - var_p) * a(sinks) / a(non-sink image).
        The row still sums to 1 and exactly (1 - var_p) of the sink mass moves.
    Sliding-window layers (Gemma 3): once a sequence outgrows the window, the layer's cache drops its
    oldest keys, so key j of a call is no longer position j and the column tensors (over the prompt)
    would point at the wrong keys.
        cached_positions  positions the layer had cached before this call (its cache's `get_seq_length`),
                       or None (a layer that never drops keys). The backend then knows the Tk keys it
                       gets are positions cached_positions + Tq - Tk .. cached_positions + Tq - 1 and puts
                       the dropped ones back in front as masked keys. `attach` sets it before every call.
    Outputs (handed back through `record` and `on_output`):
        return_image_mass     fill `record.image_mass` (B, H, Tq): final attention mass on image columns.
        return_attention_row  fill `record.attention_row` (B, H, Tk) on decode calls (Tq == 1): the
                              final attention row (e.g. for OPERA).
        record         the latest call's outputs (mutable; the backend overwrites it each call).
        on_output      optional callback(module, record) after each call, to collect every step.
    """

    image_columns: torch.Tensor | None = None
    column_bias: torch.Tensor | None = None
    head_bias: torch.Tensor | None = None
    pai_alpha: float | torch.Tensor = 0.0
    pai_last_row_only: bool = True
    var_sink_columns: torch.Tensor | None = None
    var_p: float = 0.6
    var_rho: float = 0.5
    var_summ: float = 0.2
    var_query_start: int | torch.Tensor | None = None
    return_image_mass: bool = False
    return_attention_row: bool = False
    cached_positions: int | None = None
    record: AttentionRecord = field(default_factory=AttentionRecord)
    on_output: Callable[[Any, AttentionRecord], None] | None = None
    _cache: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("var_p", "var_rho", "var_summ"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"AttentionEdit.{name} must be in [0, 1]; got {value!r}")
        if not isinstance(self.pai_alpha, torch.Tensor) and self.pai_alpha < 0:
            raise ValueError(f"AttentionEdit.pai_alpha must be >= 0; got {self.pai_alpha!r}")

    # ---- what is switched on ----------------------------------------------------------------
    @property
    def has_boost(self) -> bool:
        if isinstance(self.pai_alpha, torch.Tensor):
            return True
        return self.pai_alpha != 0 and self.image_columns is not None

    @property
    def has_var(self) -> bool:
        return self.var_sink_columns is not None and self.var_p != 1.0

    def is_noop(self) -> bool:
        """True when the edit changes nothing and asks for nothing (the backend then runs plain SDPA)."""
        return (self.column_bias is None and self.head_bias is None and not self.has_boost
                and not self.has_var and not self.return_image_mass and not self.return_attention_row)

    # ---- normalised column tensors (shared by both implementations) -------------------------
    def columns(self, batch: int, heads: int, device: torch.device) -> EditColumns:
        """The edit's tensors on `device`, broadcast to `batch`, cached across calls (decode steps).

        The cache holds the source tensors themselves and compares them by identity, so assigning a new
        tensor to a field is always seen (ids of freed tensors are reused, so ids alone are not enough).
        Replace a field's tensor rather than mutating it in place.
        """
        sources = (self.image_columns, self.column_bias, self.head_bias, self.pai_alpha, self.var_sink_columns,
                   self.var_query_start)
        scalars = (batch, heads, str(device), self.var_p)
        if self._cache is not None:
            cached_scalars, cached_sources, cols = self._cache
            if cached_scalars == scalars and all(a is b for a, b in zip(cached_sources, sources)):
                return cols
        cols = _build_columns(self, batch, heads, torch.device(device))
        self._cache = (scalars, sources, cols)
        return cols


@dataclass(frozen=True, eq=False)
class EditColumns:
    """An edit's tensors, validated, on one device, with the batch broadcast (see `AttentionEdit`)."""

    length: int  # Tc: the columns these cover; columns >= Tc are plain text
    image: torch.Tensor | None  # (B, Tc) bool
    bias: torch.Tensor | None  # (B, Tc) fp32
    boost: torch.Tensor | None  # (B, Tc) fp32 per-column PAI alpha
    sink: torch.Tensor | None  # (B, Tc) bool, only when VAR is on
    head_bias: torch.Tensor | None  # (B, H) fp32
    query_start: torch.Tensor | None  # (B,) int32, only when VAR is on


def _column(t: torch.Tensor | None, name: str, batch: int, device, dtype) -> torch.Tensor | None:
    if t is None:
        return None
    if t.dim() != 2 or batch % t.shape[0]:
        raise ValueError(f"AttentionEdit.{name} must be (B, T_prompt) with B = {batch} (or a divisor); "
                         f"got {tuple(t.shape)}")
    return _rows(t.to(device=device, dtype=dtype), batch)


def _rows(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Rows per sample -> rows per model batch row. generate() expands each sample into consecutive rows
    (beams, num_return_sequences) with repeat_interleave, so each sample's row is repeated in place."""
    return t.repeat_interleave(batch // t.shape[0], dim=0).contiguous()


def _build_columns(edit: AttentionEdit, batch: int, heads: int, device: torch.device) -> EditColumns:
    image = _column(edit.image_columns, "image_columns", batch, device, torch.bool)
    bias = _column(edit.column_bias, "column_bias", batch, device, torch.float32)
    if isinstance(edit.pai_alpha, torch.Tensor):
        boost = _column(edit.pai_alpha, "pai_alpha", batch, device, torch.float32)
    elif edit.has_boost:
        boost = image.to(torch.float32) * float(edit.pai_alpha)
    else:
        boost = None
    sink = _column(edit.var_sink_columns, "var_sink_columns", batch, device, torch.bool) if edit.has_var else None
    lengths = {t.shape[-1] for t in (image, bias, boost, sink) if t is not None}
    length = max(lengths, default=0)
    # columns given over different lengths: extend the shorter ones as text columns
    image, bias, boost, sink = (None if t is None else pad_columns(t, length, False if t.dtype == torch.bool else 0.0)
                                for t in (image, bias, boost, sink))
    head_bias = None
    if edit.head_bias is not None:
        hb = edit.head_bias.to(device=device, dtype=torch.float32)
        if hb.dim() == 1:
            hb = hb[None]
        if hb.dim() != 2 or hb.shape[-1] != heads or batch % hb.shape[0]:
            raise ValueError(f"AttentionEdit.head_bias must be (H,) or (B, H) with H = {heads}; "
                             f"got {tuple(edit.head_bias.shape)}")
        head_bias = _rows(hb, batch)
    if (edit.head_bias is not None or edit.has_var) and image is None:
        raise ValueError("AttentionEdit.head_bias and VAR need image_columns")
    query_start = None
    if sink is not None:
        if edit.var_query_start is None:  # one past the last image column of each row
            idx = torch.arange(length, device=device)
            query_start = (torch.where(image, idx, -1).amax(-1) + 1).to(torch.int32)
        elif isinstance(edit.var_query_start, torch.Tensor):
            start = edit.var_query_start.to(device=device, dtype=torch.int32).reshape(-1, 1)
            query_start = _rows(start, batch).reshape(-1)
        else:
            query_start = torch.full((batch,), int(edit.var_query_start), dtype=torch.int32, device=device)
    return EditColumns(length, image, bias, boost, sink, head_bias, query_start)


def pad_columns(cols: torch.Tensor | None, tk: int, fill: float | bool) -> torch.Tensor | None:
    """Extend a (B, T_prompt) column tensor to (B, tk) for keys generated after the prompt."""
    if cols is None or cols.shape[-1] == tk:
        return cols
    if cols.shape[-1] > tk:
        raise ValueError(f"column tensor covers {cols.shape[-1]} keys but attention sees only {tk}")
    pad = cols.new_full((*cols.shape[:-1], tk - cols.shape[-1]), fill)
    return torch.cat([cols, pad], dim=-1)
