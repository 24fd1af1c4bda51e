"""Early exits (the logit lens): next-token logits read off a decoder layer's residual stream.

    logits_l = lm_head(norm(h_l))      h_l: the output of decoder layer l
    logits_l = lm_head(h_l)            with `normed=False`: DoLa's early exits skip the final norm

MemVR reads them to decide when to re-inject the image, DeCo to find the layer that sees a candidate
token best, DoLa the layer most divergent from the last (its official code and the HF port apply the head
to the raw residual stream, hence the switch). They need the last position only, so only those rows go
through the head: |layers| x B rows per step instead of every position of the prompt at every layer (the
official codes' cost).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True, eq=False)
class LogitLens:
    """The final norm (unless `normed` is False) and the LM head of one model, applied to any residual states."""

    norm: nn.Module
    head: nn.Module
    normed: bool = True

    @classmethod
    def of(cls, adapter, model: nn.Module, normed: bool = True) -> LogitLens:
        return cls(adapter.resolve(model, "norm"), adapter.resolve(model, "lm_head"), normed)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) residual states -> (..., V) fp32 logits. The modules' hooks do not run: a method's
        hook on `lm_head` (VISTA's, DeCo's) must see only the model's own next-token logits."""
        return self.head.forward(self.norm.forward(hidden) if self.normed else hidden).float()


def last_position(output) -> torch.Tensor:
    """(B, d) last-position states from a decoder layer's output (a tensor, or a tuple led by one)."""
    hidden = output[0] if isinstance(output, tuple) else output
    return hidden[:, -1]


TOP = 10  # MemVR's code: the entropy of the top-10 logits


def top_entropy(logits: torch.Tensor, top: int = TOP) -> torch.Tensor:
    """(N, V) -> (N,) entropy of the softmax over each row's `top` largest logits, divided by ln(top)."""
    k = min(top, logits.shape[-1])
    p = logits.float().topk(k, dim=-1).values.softmax(-1)
    return torch.special.entr(p).sum(-1) / math.log(k)  # entr = −p·log p
