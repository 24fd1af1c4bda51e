"""Torch reference of attention with edits: the spec the Triton kernel must match.

It materialises the (B, H, Tq, Tk) scores, so it is eager-attention cost; it takes any mask, and it
is the only implementation of the plain-function edits (`score_mod`, `prob_mod`). The math (order
of the edits, the redistribution's selection) is documented in `halluc.kernels.edits`.
"""
from __future__ import annotations

import torch

from halluc.kernels.edits import AttentionEdit, AttentionResult, EditColumns, Mod, Where, pad_columns
from halluc.kernels.masks import causal_mask


def attention_reference(query, key, value, attention_mask=None, *, scaling: float, edit: AttentionEdit | None = None,
                        is_causal: bool = True) -> AttentionResult:
    """query (B, H, Tq, D); key/value (B, Hkv, Tk, D) with H % Hkv == 0 (grouped-query attention);
    attention_mask None, or (B, 1, Tq, Tk) bool (True = attend) or float (added to the scores).
    With no mask and `is_causal`, query i sits at key position Tk - Tq + i.

    Returns AttentionResult(out (B, Tq, H, D), column_mass, attention_row, "torch", side_output).
    """
    b, h, tq, _ = query.shape
    tk = key.shape[-2]
    edit = edit if edit is not None else AttentionEdit()
    cols = edit.column_tensors(b, h, query.device)
    k, v = expand_kv_heads(key, h), expand_kv_heads(value, h)  # (B, H, Tk, D)
    s = (query.float() @ k.float().transpose(-1, -2)) * scaling  # (B, H, Tq, Tk) fp32

    columns = pad_columns(cols.columns, tk, False)  # (B, Tk) bool or None
    where = _where(b, h, tq, tk, columns, query.device) if edit.has_mods else None
    s = _edit_scores(s, edit, cols, columns)
    s = _modify(edit.score_mod, s, where)
    s = _mask(s, attention_mask, is_causal)
    if cols.null_logit is not None:  # the null key's column, dropped after the softmax
        a = torch.cat([s, _null_column(cols.null_logit, tq, tk)], -1).softmax(-1).nan_to_num(0.0)[..., :tk]
    else:
        a = s.softmax(-1).nan_to_num(0.0)  # (B, H, Tq, Tk); fully masked rows are all zeros
    if cols.sources is not None:
        a = _redistribute(a, columns, pad_columns(cols.sources, tk, False), cols.query_start, edit)
    a = _modify(edit.prob_mod, a, where)

    mass = _column_mass(a, columns) if edit.return_column_mass else None
    row = a[:, :, 0, :].clone() if edit.return_attention_row and tq == 1 else None
    out = (a.to(v.dtype) @ v).transpose(1, 2).contiguous()  # (B, Tq, H, D)
    side = edit.side_output(a[:, :, -1], v) if edit.side_output is not None else None
    return AttentionResult(out, mass, row, "torch", side)


def side_output(query, key, value, attention_mask=None, *, scaling: float, edit: AttentionEdit,
                is_causal: bool = True):
    """`edit.side_output` of a call whose attention runs elsewhere (an edit that only reads): the last
    query's final row, softmax(q_last·kᵀ·scaling + its mask row), computed by itself. Shapes as in
    `attention_reference`; returns what the function returns."""
    assert edit.side_output is not None, "side_output() serves an edit with a side output"
    row, v = _last_row(query, key, value, attention_mask, scaling)
    return edit.side_output(row[:, :, 0], v)  # the row (B, H, Tk)


def attention_reading(query, key, value, attention_mask=None, *, scaling: float, edit: AttentionEdit
                      ) -> AttentionResult:
    """A decode call (Tq == 1) of an edit that only reads: the query's one row, computed once in fp32, gives
    both the plain attention output (SDPA's up to rounding) and `edit.side_output`. On CPU this is cheaper
    than SDPA plus the same row computed again. Shapes as in `attention_reference`."""
    assert edit.side_output is not None, "attention_reading() serves an edit with a side output"
    row, v = _last_row(query, key, value, attention_mask, scaling)  # (B, H, 1, Tk) fp32
    out = (row.to(v.dtype) @ v).transpose(1, 2)  # (B, 1, H, D): contiguous as it is (one query)
    return AttentionResult(out, None, None, "torch", edit.side_output(row[:, :, 0], v))


def _last_row(query, key, value, attention_mask, scaling: float):
    """The last query's final attention row (B, H, 1, Tk) fp32 and the values (B, H, Tk, D) per query head."""
    h = query.shape[1]
    k, v = expand_kv_heads(key, h), expand_kv_heads(value, h)  # (B, H, Tk, D)
    s = (query[:, :, -1:].float() @ k.float().transpose(-1, -2)) * scaling  # (B, H, 1, Tk) fp32
    if attention_mask is None:  # nothing masked: no row can be empty
        return s.softmax(-1), v
    s = _mask(s, attention_mask[..., -1:, :], False)  # the last query row of the mask; causality hides nothing
    return s.softmax(-1).nan_to_num(0.0), v


def expand_kv_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, Hkv, Tk, D) -> (B, H, Tk, D): query head h reads KV head h // (H / Hkv) (grouped-query attention).

    The same values as `t.repeat_interleave(H // Hkv, dim=1)`, without its cost (on CPU it copies
    through an index kernel, ~10x the attention itself at decode) and without a copy when H == Hkv."""
    groups = heads // t.shape[1]
    if groups == 1:
        return t
    b, hkv, tk, d = t.shape
    return t[:, :, None].expand(b, hkv, groups, tk, d).reshape(b, heads, tk, d)


def _edit_scores(s, edit: AttentionEdit, cols: EditColumns, columns):
    """The score primitives on raw scores s (B, H, Tq, Tk), in order: boost, head bias, column bias."""
    tk = s.shape[-1]
    if cols.boost is not None:  # s += strength |s| (on raw scores)
        assert edit.boost is not None  # cols.boost is built from it
        boost = pad_columns(cols.boost, tk, 0.0)[:, None, None, :] * s.abs()
        if edit.boost.last_row_only:
            boost[:, :, :-1] = 0.0
        s = s + boost
    if cols.head_bias is not None:
        s = s + torch.where(columns[:, None, None, :], cols.head_bias[:, :, None, None], 0.0)
    if cols.bias is not None:
        s = s + pad_columns(cols.bias, tk, 0.0)[:, None, None, :]
    return s


def _null_column(null, tq: int, tk: int):
    """(B, H, Tq, 1) fp32 null-key logit of each query (at key position tk − tq + i); −inf past the null's rows."""
    n = min(null.shape[-1], tk)
    logits = null.new_full((*null.shape[:2], tk), float("-inf"))
    logits[..., :n] = null[..., :n]
    return logits[..., tk - tq:, None]


def _mask(s, attention_mask, is_causal: bool):
    """-inf where a key is not attended: the given mask (bool or additive float), else the causal rule."""
    tq, tk = s.shape[-2:]
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            return s.masked_fill(~attention_mask, float("-inf"))
        return s + attention_mask.float()
    if is_causal and tq > 1:  # a single query sits at the last key position and sees every key
        return s.masked_fill(~causal_mask(tq, tk, s.device), float("-inf"))
    return s


def _where(b: int, h: int, tq: int, tk: int, columns, device) -> Where:
    """Broadcastable indices of a (B, H, Tq, Tk) tensor for the plain-function edits."""
    if columns is None:
        columns = torch.zeros(b, tk, dtype=torch.bool, device=device)
    return Where(batch=torch.arange(b, device=device).view(b, 1, 1, 1),
                 head=torch.arange(h, device=device).view(1, h, 1, 1),
                 query=torch.arange(tk - tq, tk, device=device).view(1, 1, tq, 1),
                 key=torch.arange(tk, device=device).view(1, 1, 1, tk),
                 columns=columns[:, None, None, :])


def _modify(fn: Mod | None, values, where: Where | None):
    """values (B, H, Tq, Tk) fp32 through a plain-function edit; it must keep the shape."""
    if fn is None:
        return values
    assert where is not None  # built whenever the edit has a plain-function edit (`has_mods`)
    out = fn(values, where)
    if not isinstance(out, torch.Tensor) or out.shape != values.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"an attention score_mod/prob_mod must return a {tuple(values.shape)} tensor; got {got}")
    return out.float()


def _column_mass(a, columns):
    """(B, H, Tq) final attention on the column set (zeros without one)."""
    if columns is None:
        return a.new_zeros(a.shape[:-1])
    return (a * columns[:, None, None, :]).sum(-1)


def _redistribute(a, columns, sources, query_start, edit: AttentionEdit):
    """`Redistribution` on post-softmax rows a (B, H, Tq, Tk); columns/sources (B, Tk) bool; query_start (B,)."""
    spec = edit.redistribute
    assert spec is not None  # sources are built only from a redistribution
    tq, tk = a.shape[-2:]
    col, src = columns[:, None, None, :], sources[:, None, None, :]
    col_src, targets = col & src, col & ~src
    m_cs = (a * col_src).sum(-1)  # (B, H, Tq) mass on the column set's own sources
    m_src = (a * src).sum(-1)  # on all sources (in the column set or not)
    m_t = (a * targets).sum(-1)  # on the targets: the column set's other columns
    m_col = m_cs + m_t
    qpos = torch.arange(tk - tq, tk, device=a.device)
    selected = ((qpos[None, None, :] >= query_start[:, None, None]) & (m_t > 0)
                & (m_cs <= spec.max_source_share * m_col) & (m_col >= spec.min_mass))
    grow = 1.0 + (1.0 - spec.keep) * m_src / m_t.clamp_min(torch.finfo(a.dtype).tiny)
    factor = torch.where(src, spec.keep, torch.where(targets, grow[..., None], 1.0))
    return torch.where(selected[..., None], a * factor, a)
