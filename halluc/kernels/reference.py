"""Torch reference of attention with edits: the spec the Triton kernel must match.

It materialises the (B, H, Tq, Tk) scores, so it is eager-attention cost; it takes any mask.
The math (order of the edits, VAR's selection and redistribution) is documented in
`halluc.kernels.edits`.
"""
from __future__ import annotations

import torch

from halluc.kernels.edits import AttentionEdit, AttentionResult, pad_columns
from halluc.kernels.masks import causal_mask


def attention_reference(query, key, value, attention_mask=None, *, scaling: float, edit: AttentionEdit | None = None,
                        is_causal: bool = True) -> AttentionResult:
    """query (B, H, Tq, D); key/value (B, Hkv, Tk, D) with H % Hkv == 0 (grouped-query attention);
    attention_mask None, or (B, 1, Tq, Tk) bool (True = attend) or float (added to the scores).
    With no mask and `is_causal`, query i sits at key position Tk - Tq + i.

    Returns AttentionResult(out (B, Tq, H, D), image_mass, attention_row, "torch").
    """
    b, h, tq, _ = query.shape
    tk = key.shape[-2]
    edit = edit if edit is not None else AttentionEdit()
    cols = edit.columns(b, h, query.device)
    groups = h // key.shape[1]
    k = key.repeat_interleave(groups, dim=1)  # (B, H, Tk, D)
    v = value.repeat_interleave(groups, dim=1)
    s = (query.float() @ k.float().transpose(-1, -2)) * scaling  # (B, H, Tq, Tk) fp32

    image = pad_columns(cols.image, tk, False)  # (B, Tk) bool or None
    if cols.boost is not None:  # PAI: s += alpha |s| (on raw scores)
        boost = pad_columns(cols.boost, tk, 0.0)[:, None, None, :] * s.abs()
        if edit.pai_last_row_only:
            boost[:, :, :-1] = 0.0
        s = s + boost
    if cols.head_bias is not None:
        s = s + torch.where(image[:, None, None, :], cols.head_bias[:, :, None, None], 0.0)
    if cols.bias is not None:
        s = s + pad_columns(cols.bias, tk, 0.0)[:, None, None, :]

    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            s = s.masked_fill(~attention_mask, float("-inf"))
        else:
            s = s + attention_mask.float()
    elif is_causal:
        s = s.masked_fill(~causal_mask(tq, tk, s.device), float("-inf"))
    a = s.softmax(-1).nan_to_num(0.0)  # fully masked rows are all zeros

    if cols.sink is not None:
        a = _var_redistribute(a, image, pad_columns(cols.sink, tk, False), cols.query_start, edit)

    image_mass = None
    if edit.return_image_mass:
        image_mass = (a * image[:, None, None, :]).sum(-1) if image is not None else a.new_zeros(b, h, tq)
    row = a[:, :, 0, :].clone() if edit.return_attention_row and tq == 1 else None
    out = (a.to(v.dtype) @ v).transpose(1, 2).contiguous()  # (B, Tq, H, D)
    return AttentionResult(out, image_mass, row, "torch")


def _var_redistribute(a, image, sink, query_start, edit: AttentionEdit):
    """VAR on post-softmax rows a (B, H, Tq, Tk); image/sink (B, Tk) bool; query_start (B,)."""
    tq, tk = a.shape[-2:]
    img, snk = image[:, None, None, :], sink[:, None, None, :]
    vis_sink, other_img = img & snk, img & ~snk
    m_vs = (a * vis_sink).sum(-1)  # (B, H, Tq) attention on visual sinks
    m_sink = (a * snk).sum(-1)  # on all sinks (visual and text)
    m_n = (a * other_img).sum(-1)  # on non-sink image columns
    m_img = m_vs + m_n
    qpos = torch.arange(tk - tq, tk, device=a.device)
    selected = ((qpos[None, None, :] >= query_start[:, None, None]) & (m_n > 0)
                & (m_vs <= edit.var_rho * m_img) & (m_img >= edit.var_summ))
    grow = 1.0 + (1.0 - edit.var_p) * m_sink / m_n.clamp_min(torch.finfo(a.dtype).tiny)
    factor = torch.where(snk, edit.var_p, torch.where(other_img, grow[..., None], 1.0))
    return torch.where(selected[..., None], a * factor, a)
