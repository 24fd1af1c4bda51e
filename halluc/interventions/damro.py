"""DAMRO (Gong et al., EMNLP 2024, arXiv 2410.04514): contrast away the ViT's outlier tokens.

    O = top-k_j CLS-attention(j);   ℓ = (1+α)·ℓ(all image tokens) − α·ℓ(only the tokens in O),
    tokens with p < β·max p (original view) dropped

Outlier tokens: the k image tokens the vision encoder's CLS token attends to most, in the layer
whose output LLaVA feeds to the LM (`adapter.vision_cls_attention`, CLIP layer −2), per image.
Negative view: a second copy of every sample (`Branch("outliers")`, its rows from
`session.view_rows("damro", "outliers")`) in which every image column except the k
outliers is removed from the LM's attention: an `AttentionEdit` with `column_bias` = −inf on those
columns of those rows, in every decoder layer (the original rows get a zero bias).
Hook points: none (attention edits only).
Cost: 1 extra batch row per sample (its own KV cache), one vision-tower pass for the CLS attention,
and edited attention (the halluc backend's edit path) in every layer.
Families: those with a CLS-token vision tower: LLaVA-1.5 and LLaVA-NeXT (others are refused).

Paper / code discrepancies and our choices:
  - the official negative sequence holds only the k outlier features (a shorter sequence, positions
    renumbered); ours keeps the full sequence and hides the other image tokens, so the text after
    the image keeps its original positions. Same visible content, RoPE offsets differ by 576 − k.
  - the official CLS attention is one merged-head softmax(q·kᵀ/√1024) over the full width; the
    adapter's is the mean of the 16 per-head softmaxes, so the top-k can differ slightly (matching it
    exactly needs a merged-head option in `vision_cls_attention`).
  - LLaVA-NeXT: the official code takes the top-k per crop; the adapter covers the base crop only,
    so the outliers are the base crop's top-k and every tile token is hidden in the negative view.
  - the official `_sample` bypasses temperature / top-p; ours applies the run's decoding settings
    (the paper's defaults, temperature 1 and top-p 1, are the same thing). α = 0 and β = 0 is the
    identity (no branch, no edit).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from halluc.engine.views import ORIGINAL, Branch
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register
from halluc.kernels.edits import AttentionEdit

VIEW = "outliers"


def outlier_columns(cls_attention: torch.Tensor, positions: list[list[torch.Tensor]], k: int,
                    width: int) -> torch.Tensor:
    """(B, width) bool: the top-k CLS-attention tokens of each image, as prompt columns.

    cls_attention (B, n) per row, aligned with the concatenation of that row's `positions` (one
    (n_i,) tensor of prompt indices per image).
    """
    keep = torch.zeros(len(positions), width, dtype=torch.bool)
    for row, spans in enumerate(positions):
        scores = cls_attention[row].float().cpu().split([len(p) for p in spans])
        for score, cols in zip(scores, spans):
            keep[row, cols.cpu()[score.topk(min(k, len(score))).indices]] = True
    return keep


def outlier_bias(image_mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, T) float: −inf on image columns not in `keep`, 0 elsewhere."""
    return torch.zeros(image_mask.shape).masked_fill(image_mask.cpu() & ~keep, float("-inf"))


@register
@dataclass(frozen=True)
class DAMRO(Method):
    """Outlier-token contrastive decoding.

    Args:
        alpha: contrast strength (paper: 2; 0 with beta 0 = identity).
        k: outlier tokens kept per image in the negative view (paper: 10).
        beta: adaptive plausibility cutoff on the original view (paper: 0.1; 0 = none).
    """

    name = "damro"
    kind = "decoding"
    paper = "Gong et al., EMNLP 2024 (arXiv 2410.04514)"
    formula = "(1+α)·ℓ(v) − α·ℓ(v restricted to the top-k ViT-CLS outlier tokens)"
    cost = "1 extra batch row per sample (outlier view), 1 vision-tower pass, edited attention in every layer"
    families = frozenset({"llava", "llava_next"})
    alpha: float = param(2.0, low=0.0, doc="contrast strength")
    k: int = param(10, low=1, doc="outlier tokens per image (top-k of the ViT CLS attention)")
    beta: float = param(0.1, low=0.0, high=1.0, doc="plausibility cutoff on the original view")

    zero_params = {"alpha": 0.0, "beta": 0.0}
    needs = frozenset({"vision_cls"})

    def is_identity(self) -> bool:
        return self.alpha == 0 and self.beta == 0

    def branches(self, request) -> list[Branch]:
        return [] if self.is_identity() else [Branch(VIEW)]

    def combine(self, views):
        return (1 + self.alpha) * views[ORIGINAL] - self.alpha * views[VIEW]

    def plausibility_cutoff(self):
        return self.beta

    def attention_edits(self, session) -> dict[int, AttentionEdit]:
        rows = session.view_rows(self.name, VIEW)
        if rows is None:
            return {}
        adapter, model = session.adapter, session.model
        bias = self._bias(session, rows)  # (views * B, T)
        image = session.image_mask
        # generate's row expansion (beams) repeats each row in place; the edit follows it
        return {i: AttentionEdit(columns=image, column_bias=bias) for i in range(adapter.num_layers(model))}

    def _bias(self, session, rows: slice) -> torch.Tensor:
        image_mask = session.image_mask
        cls = session.adapter.vision_cls_attention(session.model, session.inputs)  # (rows, n) over seen patches
        seen = [[s.positions for s in row if s.kind in ("image", "base")] for row in session.image_spans]
        keep = outlier_columns(cls[rows], seen[rows], self.k, image_mask.shape[1])
        bias = torch.zeros(image_mask.shape)
        bias[rows] = outlier_bias(image_mask[rows], keep)
        return bias.to(image_mask.device)
