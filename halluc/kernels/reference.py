"""Torch reference of attention with edits: the spec the Triton kernel must match."""
from __future__ import annotations

import torch

from halluc.kernels.edits import AttentionEdit, pad_columns


def attention_reference(query, key, value, attention_mask, *, scaling: float, edit: AttentionEdit,
                        is_causal: bool = True):
    """query (B, H, Tq, D); key/value (B, Hkv, Tk, D); attention_mask None or (B, 1, Tq, Tk) bool.

    Returns the output (B, Tq, H, D), as transformers' attention functions do.
    """
    b, h, tq, _ = query.shape
    tk = key.shape[-2]
    groups = h // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)  # (B, H, Tk, D)
    value = value.repeat_interleave(groups, dim=1)
    scores = (query.float() @ key.float().transpose(-1, -2)) * scaling  # (B, H, Tq, Tk)
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask.bool(), float("-inf"))
    elif is_causal and tq > 1:
        # query i sits at key position tk - tq + i
        causal = torch.ones(tq, tk, dtype=torch.bool, device=query.device).tril(tk - tq)
        scores = scores.masked_fill(~causal, float("-inf"))
    bias = pad_columns(edit.column_bias, tk, 0.0)
    if bias is not None:
        scores = scores + bias[:, None, None, :].float()  # (B, 1, 1, Tk)
    probs = scores.softmax(-1).nan_to_num(0.0)  # fully masked rows stay finite
    out = probs.to(value.dtype) @ value  # (B, H, Tq, D)
    return out.transpose(1, 2).contiguous()
