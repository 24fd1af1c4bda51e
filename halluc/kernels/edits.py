"""What an attention-editing method asks of one decoder layer's attention (the kernel's inputs).

An `AttentionEdit` is built from primitives named by what they do, not by the paper that uses them:
a score boost on a column set, per-column and per-head biases, redistribution of probability mass
from one column set to another, a null key per query row (an extra key with value 0 and a logit of
its own, whose share of the softmax is dropped), and two outputs (the mass on the column set, the attention row).
PAI, VAR, DAMRO and OPERA are each a choice of primitives. Anything else can be written as a plain
function on the scores or the probabilities (`score_mod`, `prob_mod`, after FlexAttention's
`score_mod`); such an edit runs on the torch reference, and the Triton kernel stays an optimisation
of the primitives. A side computation from the last query's final attention row and the values
(`side_output`, e.g. ONLY's one-layer side branch) changes nothing: alone it leaves the attention on
SDPA and computes that one row on the side (a decode call on the torch reference's device computes
the row once and takes the output from it too).

Shapes: B = batch rows as the model sees them, H = query heads, Tq = query rows of this call,
Tk = key length so far, Tc = the prompt length the column tensors were built over (Tc <= Tk), Tn = the prompt length the
null-key logits were built over (query rows at key positions >= Tn get no null key).
Column tensors are given over the prompt (B, Tc) (or (1, Tc), broadcast over the batch); keys
generated after the prompt are never in the column set and get no bias or boost, so the
implementations treat columns >= Tc as outside every set (`pad_columns` spells that out).

The edit is applied in this order, per (batch row b, head h, query row i, key column j), on
scores s = scale * scaling * q_i . k_j (computed in fp32; `scale` multiplies the call's `scaling`, so
every implementation, SDPA included, runs it as a different softmax temperature):

    1. boost         s += strength_j * |s|       `ScoreBoost`: strength on the column set (float) or
                                                 per column (tensor); only the last query row of the
                                                 call when `last_row_only`
    2. head bias     s += head_bias[b, h]        on the column set
    3. column bias   s += column_bias[b, j]      (-inf removes key j)
    4. score_mod     s = score_mod(s, where)     any function of the scores (reference only)
    5. masks         causal (query i sits at key position Tk - Tq + i) and the attention mask
    6. softmax       a = softmax(s); a fully masked row is all zeros (its output is 0); with a null
                     key, a = softmax([s, n_i])[:Tk] for the query at key position i (`null_logit`):
                     the row sums to 1 − its null key's share
    7. redistribute  on selected (b, h, i) rows the `sources` keep share `keep` of their mass, the rest
                     moves to the column set's other columns in proportion to their attention
                     (`Redistribution`)
    8. prob_mod      a = prob_mod(a, where)      any function of the probabilities (reference only)
    9. output        o = a @ v; the optional outputs are computed from this final `a`, and
                     `side_output(a[:, :, -1], v)` from its last row and the values.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, overload

import torch


class Where(NamedTuple):
    """Where each entry of a (B, H, Tq, Tk) score or probability tensor sits; every field broadcasts to it.

    batch    (B, 1, 1, 1) long: the batch row
    head     (1, H, 1, 1) long: the query head
    query    (1, 1, Tq, 1) long: each query's absolute key position, Tk - Tq + i
    key      (1, 1, 1, Tk) long: the key column
    columns  (B, 1, 1, Tk) bool: the edit's column set (False past the prompt; all False without one),
             with the batch rows as the model runs them (generate repeats a sample's row per beam)
    """

    batch: torch.Tensor
    head: torch.Tensor
    query: torch.Tensor
    key: torch.Tensor
    columns: torch.Tensor


Mod = Callable[[torch.Tensor, Where], torch.Tensor]
# side_output(last row (B, H, Tk) fp32, values (B, H, Tk, D)) -> anything (kept in the record)
Side = Callable[[torch.Tensor, torch.Tensor], Any]


class AttentionResult(NamedTuple):
    """What one attention call returns (both implementations).

    out            (B, Tq, H, D) in the query dtype (transformers' layout: heads after the query axis)
    column_mass    (B, H, Tq) fp32 share of each row's final attention on the column set, or None
    attention_row  (B, H, Tk) fp32 the final attention row when Tq == 1, or None
    impl           "triton", "torch", or "sdpa" (an edit that only reads): which implementation produced it
    side_output    what the edit's `side_output` function returned, or None
    """

    out: torch.Tensor
    column_mass: torch.Tensor | None
    attention_row: torch.Tensor | None
    impl: str
    side_output: Any = None


@dataclass(eq=False)
class AttentionRecord:
    """Mutable record the backend fills after each attention call that ran with the edit.

    It keeps only the latest call; use `AttentionEdit.on_output` to collect every call (e.g. every
    decode step).
    """

    column_mass: torch.Tensor | None = None  # (B, H, Tq) fp32, when `return_column_mass`
    attention_row: torch.Tensor | None = None  # (B, H, Tk) fp32, when `return_attention_row` and Tq == 1
    calls: int = 0  # attention calls made with this edit so far
    impl: str | None = None  # implementation of the latest call
    side_output: Any = None  # what `AttentionEdit.side_output` returned in the latest call

    def update(self, result: AttentionResult) -> None:
        self.column_mass = result.column_mass
        self.attention_row = result.attention_row
        self.impl = result.impl
        self.side_output = result.side_output
        self.calls += 1

    def clear(self) -> None:
        self.column_mass = self.attention_row = self.impl = self.side_output = None
        self.calls = 0


# eq=False on the primitives: they may hold tensors (no elementwise ==) and the column cache compares
# them by identity (see `AttentionEdit.column_tensors`).
@dataclass(frozen=True, eq=False)
class ScoreBoost:
    """s += strength_j * |s| on the raw scores, before any bias (PAI, Liu et al., ECCV 2024).

    strength       float: on the edit's column set (0 = no boost); or a (B, Tc) float tensor of
                   per-column strengths (e.g. PAINT's two token groups), which needs no column set.
    last_row_only  boost only the last query row of each call (PAI's default: the token being
                   predicted; in decode that is the only row).
    """

    strength: float | torch.Tensor
    last_row_only: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.strength, torch.Tensor) and self.strength < 0:
            raise ValueError(f"ScoreBoost.strength must be >= 0; got {self.strength!r}")

    @property
    def active(self) -> bool:
        return isinstance(self.strength, torch.Tensor) or self.strength != 0


@dataclass(frozen=True, eq=False)
class Redistribution:
    """Post-softmax: move part of the `sources` columns' mass onto the column set's other columns.

    On the final row a of (b, h, i), with C the edit's column set, S = `sources`, T = C minus S:
        a[S] *= keep;  a[T] *= 1 + (1 - keep) * a(S) / a(T)
    so the row still sums to 1, exactly (1 - keep) of the sources' mass moves, and each column of T
    receives it in proportion to its attention. Sources outside C (e.g. BOS) give up mass too.
    A row is selected when all of
        a(C & S) <= max_source_share * a(C),  a(C) >= min_mass,  a(T) > 0,
        and the query's key position Tk - Tq + i >= query_start[b]
    hold. This is VAR (Kang et al., ICLR 2025) with its released code's semantics: C = image tokens,
    S = sink tokens, keep = the code's p (the paper's p is 1 - keep), max_source_share = rho,
    min_mass = summ.

    sources           (B, Tc) bool.
    keep              share of the sources' mass they keep; 1.0 is the identity.
    max_source_share  largest share of the column set's mass on its own sources of a selected row.
    min_mass          least mass on the column set of a selected row.
    query_start       int or (B,) long; None = one past the last column of the column set in each
                      row (prefill rows after it; decode rows always qualify).
    """

    sources: torch.Tensor
    keep: float = 0.6
    max_source_share: float = 0.5
    min_mass: float = 0.2
    query_start: int | torch.Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("keep", "max_source_share", "min_mass"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"Redistribution.{name} must be in [0, 1]; got {value!r}")

    @property
    def active(self) -> bool:
        return self.keep != 1.0


@dataclass(eq=False)
class AttentionEdit:
    """Edit of one attention module. Every field defaults to its identity value (order: module docstring).

    columns          (B, Tc) bool: the column set the column primitives act on (the float boost, the
                     head bias, the redistribution's targets, the column mass, `Where.columns`).
                     `attach` fills it with the prompt's image tokens when a method leaves it None.
    boost            `ScoreBoost` or None.
    scale            factor on every score of the call, before everything else (s = scale·scaling·q·k);
                     equal to multiplying the queries and keys by √scale. An edit made of a scale alone
                     (`scale_only`) stays on SDPA, and `attach` lets it share a layer with another
                     method's edit (the backend multiplies the two: `active_edits(..., scales=...)`).
    column_bias      (B, Tc) float, added to key column j in every head; -inf removes the key.
    head_bias        (H,) or (B, H) float, added to the column set's scores in head h (log c scales
                     head h's unnormalised attention on the column set by c). Needs `columns`.
    redistribute     `Redistribution` or None. Needs `columns`.
    score_mod        escape hatch on the scores: fn(s, where) -> s, s the (B, H, Tq, Tk) fp32 scores
                     after the biases and before masking, `where` a `Where` of broadcastable indices.
                     E.g. scale the attention on the column set in head 3 by 1.5:
                         score_mod=lambda s, w: s + torch.where(w.columns & (w.head == 3), math.log(1.5), 0.0)
    prob_mod         escape hatch on the probabilities: fn(a, where) -> a, after the redistribution
                     (rows are not renormalised afterwards; the outputs are computed from its result).
                     Both must return a tensor of the shape they were given.
    side_output      a side computation: fn(row, v) -> anything, called once per call with the
                     final attention row of the call's last query, row (B, H, Tk) fp32, and the values
                     v (B, H, Tk, D) (KV heads repeated for their query heads, in the value dtype); what
                     it returns lands in `record.side_output`. It changes nothing in the attention (e.g.
                     ONLY's side branch: its own reweighting of the row, times v; SID: which image
                     tokens the newest token attends to least). Alone, the attention runs on SDPA and
                     the row is computed by itself (`reads_only`; on a decode call where the torch
                     reference would run, the output is taken from that row instead).
                     An edit with a mod, or a side output next to other fields, runs on the torch
                     reference whatever HALLUC_KERNEL says.
    null_logit       (B, H, Tn) float: for the query at key position i < Tn, the logit of an extra key with
                     value 0 (−inf: none); its share of the softmax is dropped, so the row sums to < 1
                     (FarSight's causal-mask registers; a per-row attention sink). Queries at positions
                     >= Tn get none: a call whose queries all sit there (decode) runs as plain attention.
    return_column_mass    fill `record.column_mass` (B, H, Tq): final attention mass on the column set
                          (0 without one).
    return_attention_row  fill `record.attention_row` (B, H, Tk) on decode calls (Tq == 1): the final
                          attention row (e.g. for OPERA).
    cached_positions positions the layer had cached before this call (its cache's `get_seq_length`), or None
                     for a layer that never drops keys. A sliding-window layer (Gemma 3) drops its oldest
                     keys once a sequence outgrows the window, so key j of a call is no longer position j;
                     the backend then puts the dropped keys back in front as masked keys, so the column
                     tensors (over the prompt) keep pointing at the right keys. `attach` sets it per call.
    record           the latest call's outputs (mutable; the backend overwrites it each call).
    on_output        optional callback(module, record) after each call, to collect every step.
    """

    columns: torch.Tensor | None = None
    boost: ScoreBoost | None = None
    scale: float = 1.0
    column_bias: torch.Tensor | None = None
    head_bias: torch.Tensor | None = None
    redistribute: Redistribution | None = None
    null_logit: torch.Tensor | None = None
    score_mod: Mod | None = None
    prob_mod: Mod | None = None
    side_output: Side | None = None
    return_column_mass: bool = False
    return_attention_row: bool = False
    cached_positions: int | None = None
    record: AttentionRecord = field(default_factory=AttentionRecord)
    on_output: Callable[[Any, AttentionRecord], None] | None = None
    _cache: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"AttentionEdit.scale must be a finite positive factor; got {self.scale!r}")

    # ---- what is switched on ----------------------------------------------------------------
    @property
    def has_boost(self) -> bool:
        """Whether the boost changes anything (a float strength of 0 does not)."""
        return self.active_boost is not None

    @property
    def has_redistribution(self) -> bool:
        return self.active_redistribution is not None

    @property
    def active_boost(self) -> ScoreBoost | None:
        """The boost when it changes anything, else None."""
        return self.boost if self.boost is not None and self.boost.active else None

    @property
    def active_redistribution(self) -> Redistribution | None:
        """The redistribution when it changes anything, else None."""
        return self.redistribute if self.redistribute is not None and self.redistribute.active else None

    @property
    def has_mods(self) -> bool:
        """Plain-function edits and side outputs, which only the torch reference runs."""
        return self.score_mod is not None or self.prob_mod is not None or self.side_output is not None

    def _active(self) -> frozenset[str]:
        """The primitives this edit switches on (the score scale apart)."""
        switched = {"column_bias": self.column_bias is not None, "head_bias": self.head_bias is not None,
                    "null": self.null_logit is not None, "boost": self.has_boost,
                    "redistribute": self.has_redistribution, "score_mod": self.score_mod is not None,
                    "prob_mod": self.prob_mod is not None, "side_output": self.side_output is not None,
                    "column_mass": self.return_column_mass, "attention_row": self.return_attention_row}
        return frozenset(name for name, on in switched.items() if on)

    @property
    def bias_only(self) -> bool:
        """A column bias and nothing else: plain attention with an additive mask (SDPA takes it on CPU)."""
        return self._active() == {"column_bias"}

    @property
    def reads_only(self) -> bool:
        """A side output and nothing else: the attention is unchanged and can run on SDPA."""
        return self._active() == {"side_output"}

    @property
    def null_only(self) -> bool:
        """A null key and nothing else: calls whose queries all sit past its rows are plain attention."""
        return self._active() == {"null"}

    def null_reaches(self, tq: int, tk: int) -> bool:
        """Whether some query of a call (at key positions tk − tq .. tk − 1) has a null-key logit."""
        return self.null_logit is not None and tk - tq < self.null_logit.shape[-1]

    @property
    def scale_only(self) -> bool:
        """A score scale and nothing else: plain SDPA with `scaling` multiplied by `scale`."""
        return self.scale != 1.0 and not self._active()

    def is_noop(self) -> bool:
        """True when the edit changes nothing and asks for nothing (the backend then runs plain SDPA)."""
        return self.scale == 1.0 and not self._active()

    # ---- normalised column tensors (shared by both implementations) -------------------------
    def column_tensors(self, batch: int, heads: int, device: torch.device) -> EditColumns:
        """The edit's tensors on `device`, broadcast to `batch`, cached across calls (decode steps).

        The cache holds the source objects themselves and compares them by identity, so assigning a new
        tensor (or a new `ScoreBoost` / `Redistribution`) to a field is always seen (ids of freed objects
        are reused, so ids alone are not enough). Replace a field's tensor rather than mutating it in place.
        """
        sources = (self.columns, self.boost, self.column_bias, self.head_bias, self.redistribute, self.null_logit)
        scalars = (batch, heads, str(device))
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

    length: int  # Tc: the columns these cover; columns >= Tc are in no set
    columns: torch.Tensor | None  # (B, Tc) bool: the column set
    bias: torch.Tensor | None  # (B, Tc) fp32
    boost: torch.Tensor | None  # (B, Tc) fp32 per-column boost strength
    sources: torch.Tensor | None  # (B, Tc) bool, only when the redistribution is on
    head_bias: torch.Tensor | None  # (B, H) fp32
    query_start: torch.Tensor | None  # (B,) int32, only when the redistribution is on
    null_logit: torch.Tensor | None = None  # (B, H, Tn) fp32 contiguous


def _column(t: torch.Tensor | None, name: str, batch: int, device, dtype) -> torch.Tensor | None:
    if t is None:
        return None
    if t.dim() != 2 or batch % t.shape[0]:
        raise ValueError(f"AttentionEdit {name} must be (B, T_prompt) with B = {batch} (or a divisor); "
                         f"got {tuple(t.shape)}")
    return _rows(t.to(device=device, dtype=dtype), batch)


def _rows(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Rows per sample -> rows per model batch row. generate() expands each sample into consecutive rows
    (beams, num_return_sequences) with repeat_interleave, so each sample's row is repeated in place."""
    return t.repeat_interleave(batch // t.shape[0], dim=0).contiguous()


def _build_columns(edit: AttentionEdit, batch: int, heads: int, device: torch.device) -> EditColumns:
    columns = _column(edit.columns, "columns", batch, device, torch.bool)
    if (edit.head_bias is not None or edit.has_redistribution or _float_boost(edit)) and columns is None:
        raise ValueError("AttentionEdit head_bias, redistribute and a float boost strength need columns")
    bias = _column(edit.column_bias, "column_bias", batch, device, torch.float32)
    boost = _boost(edit, columns, batch, device)
    redistribution = edit.active_redistribution
    sources = _column(redistribution.sources, "redistribute.sources", batch, device, torch.bool) \
        if redistribution is not None else None
    parts = (columns, bias, boost, sources)
    length = max((t.shape[-1] for t in parts if t is not None), default=0)
    columns, bias, boost, sources = (_extend(t, length) for t in parts)
    head_bias = _head_bias(edit.head_bias, batch, heads, device)
    query_start = None
    if redistribution is not None and sources is not None:
        assert columns is not None  # checked above: a redistribution needs columns
        query_start = _query_start(redistribution, columns, batch, device)
    null = _null_logit(edit.null_logit, batch, heads, device)
    return EditColumns(length, columns, bias, boost, sources, head_bias, query_start, null)


def _extend(t: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """Tensors given over different prompt lengths: the extra columns are in no set, with no bias or boost."""
    return None if t is None else pad_columns(t, length, False if t.dtype == torch.bool else 0.0)


def _float_boost(edit: AttentionEdit) -> bool:
    boost = edit.active_boost
    return boost is not None and not isinstance(boost.strength, torch.Tensor)


def _boost(edit: AttentionEdit, columns, batch: int, device) -> torch.Tensor | None:
    """(B, Tc) fp32 per-column strength, or None without a boost."""
    boost = edit.active_boost
    if boost is None:
        return None
    if not isinstance(boost.strength, torch.Tensor):
        return columns.to(torch.float32) * float(boost.strength)
    return _column(boost.strength, "boost.strength", batch, device, torch.float32)


def _head_bias(head_bias: torch.Tensor | None, batch: int, heads: int, device) -> torch.Tensor | None:
    """(B, H) fp32 from (H,) or (B, H), or None."""
    if head_bias is None:
        return None
    hb = head_bias.to(device=device, dtype=torch.float32)
    hb = hb[None] if hb.dim() == 1 else hb
    if hb.dim() != 2 or hb.shape[-1] != heads or batch % hb.shape[0]:
        raise ValueError(f"AttentionEdit head_bias must be (H,) or (B, H) with H = {heads}; "
                         f"got {tuple(head_bias.shape)}")
    return _rows(hb, batch)


def _null_logit(null: torch.Tensor | None, batch: int, heads: int, device) -> torch.Tensor | None:
    """(B, H, Tn) fp32 from (B_in, H, Tn) with B % B_in == 0, or None."""
    if null is None:
        return None
    if null.dim() != 3 or null.shape[1] != heads or batch % null.shape[0]:
        raise ValueError(f"AttentionEdit null_logit must be (B, H, T_prompt) with H = {heads} and B = {batch} "
                         f"(or a divisor); got {tuple(null.shape)}")
    return _rows(null.to(device=device, dtype=torch.float32), batch)


def _query_start(spec: Redistribution, columns: torch.Tensor, batch: int, device) -> torch.Tensor:
    """(B,) int32: the first key position whose query rows may be redistributed."""
    if spec.query_start is None:  # one past the last column of the column set in each row
        idx = torch.arange(columns.shape[-1], device=device)
        return (torch.where(columns, idx, -1).amax(-1) + 1).to(torch.int32)
    if isinstance(spec.query_start, torch.Tensor):
        start = spec.query_start.to(device=device, dtype=torch.int32).reshape(-1, 1)
        return _rows(start, batch).reshape(-1)
    return torch.full((batch,), int(spec.query_start), dtype=torch.int32, device=device)


@overload
def pad_columns(cols: torch.Tensor, tk: int, fill: float | bool) -> torch.Tensor: ...
@overload
def pad_columns(cols: None, tk: int, fill: float | bool) -> None: ...
@overload
def pad_columns(cols: torch.Tensor | None, tk: int, fill: float | bool) -> torch.Tensor | None: ...
def pad_columns(cols: torch.Tensor | None, tk: int, fill: float | bool) -> torch.Tensor | None:
    """Extend a (B, T_prompt) column tensor to (B, tk) for keys generated after the prompt."""
    if cols is None or cols.shape[-1] == tk:
        return cols
    if cols.shape[-1] > tk:
        raise ValueError(f"column tensor covers {cols.shape[-1]} keys but attention sees only {tk}")
    pad = cols.new_full((*cols.shape[:-1], tk - cols.shape[-1]), fill)
    return torch.cat([cols, pad], dim=-1)
