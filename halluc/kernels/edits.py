"""What an attention-editing method asks of one decoder layer's attention (the kernel's inputs).

Shapes use B = batch rows as the model sees them, H = query heads, Tk = key length so far.
Column tensors are given over the prompt (B, T_prompt); generated columns are never image
columns and get no bias, so the backend pads them to Tk.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionEdit:
    image_columns: torch.Tensor | None = None  # (B, T_prompt) bool: image-token key columns
    column_bias: torch.Tensor | None = None  # (B, T_prompt) float, added to scores; -inf masks a key

    def is_noop(self) -> bool:
        return self.column_bias is None


def pad_columns(cols: torch.Tensor | None, tk: int, fill: float | bool) -> torch.Tensor | None:
    """Extend a (B, T_prompt) column tensor to (B, tk) for keys generated after the prompt."""
    if cols is None or cols.shape[-1] == tk:
        return cols
    if cols.shape[-1] > tk:
        raise ValueError(f"column tensor covers {cols.shape[-1]} keys but attention sees only {tk}")
    pad = cols.new_full((*cols.shape[:-1], tk - cols.shape[-1]), fill)
    return torch.cat([cols, pad], dim=-1)
