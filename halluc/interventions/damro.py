"""DAMRO (Gong et al., EMNLP 2024, arXiv 2410.04514): contrast away the ViT's outlier tokens.

    O = top-k_j CLS-attention(j);   ℓ = (1+α)·ℓ(v) − α·ℓ(v with only the tokens in O),
    tokens with p < β·max p (original view) dropped

variant="official" (default) computes what the released code computes (`coder-gx/DAMRO`, its patched
`modeling_llava.py` and `sample_method/sample.py`):
  - the CLS attention is one merged-head softmax of the CLS query's q_proj output against every
    key's k_proj output at full width C, softmax(q·kᵀ/√C), in the CLIP layer LLaVA feeds to the LM
    (`adapter.vision_cls_attention(..., merged_heads=True)`);
  - the negative sequence is the prompt with only the k outlier features, gathered in top-k order
    (most attended first), positions renumbered as in that shorter sequence.
  We run that sequence as the second view of the same batch without shortening the row: a
  `projector` hook puts the k outlier features, in top-k order, into the image's first k slots;
  a `model` pre-hook gives them positions s..s+k−1 and moves the text after the image back by
  P − k; every other image slot is hidden from the LM's attention (`column_bias` −inf in every
  layer). The visible tokens, their order, their positions and their causal mask are exactly the
  official shorter sequence's (hidden keys add exactly 0 to every softmax).
variant="mask" is halluc's earlier reading: the mean of the per-head softmaxes, and the full
sequence with the non-outlier image columns hidden (outliers at their raster positions, the text
after the image at its original positions). On toy-llava the two outlier sets share only 3 of 10,
and with the set held fixed the sequence construction alone moves log-probs by up to 0.2.

Cost: 1 extra batch row per sample (its own KV cache), one vision-tower pass for the CLS attention,
edited attention (column bias) in every layer.
Families: LLaVA-1.5 (official and mask), LLaVA-NeXT (mask only: the official code takes a top-k per
crop and rebuilds each crop's features, which needs a per-crop projector layout not written yet).

Other paper / code discrepancies and our choices:
  - the official `_sample` bypasses temperature / top-p; ours applies the run's decoding settings
    (the paper's temperature 1 and top-p 1 are the same thing);
  - α = 0 and β = 0 is the identity (no branch, no edit); one image per prompt in the official variant.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from halluc.engine.steps import call_positions
from halluc.engine.views import ORIGINAL, Branch
from halluc.errors import HallucError
from halluc.interventions.base import Method, param
from halluc.interventions.hooks import HookSpec
from halluc.interventions.registry import register
from halluc.kernels.edits import AttentionEdit

VIEW = "outliers"


def outlier_columns(cls_attention: torch.Tensor, positions: list[list[torch.Tensor]], k: int,
                    width: int) -> torch.Tensor:
    """(B, width) bool: the top-k CLS-attention tokens of each image, as prompt columns (variant "mask")."""
    keep = torch.zeros(len(positions), width, dtype=torch.bool)
    for row, spans in enumerate(positions):
        scores = cls_attention[row].float().cpu().split([len(p) for p in spans])
        for score, cols in zip(scores, spans):
            keep[row, cols.cpu()[score.topk(min(k, len(score))).indices]] = True
    return keep


def hidden_bias(image_mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, T) float: −inf on image columns not in `keep`, 0 elsewhere."""
    return torch.zeros(image_mask.shape).masked_fill(image_mask.cpu() & ~keep, float("-inf"))


def compacted_positions(positions: torch.Tensor, span: torch.Tensor, k: int) -> torch.Tensor:
    """(T,) positions of one row when only the image's first k slots remain: slot j at s + j, the text
    after the image moved back by P − k (P = the image's token count), the hidden slots unchanged."""
    new = positions.clone()
    new[span[:k]] = positions[span[0]] + torch.arange(k, device=positions.device)
    new[span[-1] + 1:] -= len(span) - k
    return new


@register
@dataclass(frozen=True)
class DAMRO(Method):
    """Outlier-token contrastive decoding.

    Args:
        alpha: contrast strength (paper: 2; 0 with beta 0 = identity).
        k: outlier tokens kept per image in the negative view (paper: 10).
        beta: adaptive plausibility cutoff on the original view (paper: 0.1; 0 = none).
        variant: "official" (merged-head CLS attention, the shorter top-k-ordered sequence) or "mask".
    """

    name = "damro"
    kind = "decoding"
    paper = "Gong et al., EMNLP 2024 (arXiv 2410.04514)"
    formula = "(1+α)·ℓ(v) − α·ℓ(v restricted to the top-k ViT-CLS outlier tokens)"
    cost = "1 extra batch row per sample (outlier view), 1 vision-tower pass, edited attention in every layer"
    families = frozenset({"llava", "llava_next"})
    fixed_rows = True  # per-row positions from the prefill (official variant)
    alpha: float = param(2.0, low=0.0, doc="contrast strength")
    k: int = param(10, low=1, doc="outlier tokens per image (top-k of the ViT CLS attention)")
    beta: float = param(0.1, low=0.0, high=1.0, doc="plausibility cutoff on the original view")
    variant: str = param("official", choices=("official", "mask"), doc="official code, or hide columns in place")

    zero_params = {"alpha": 0.0, "beta": 0.0}
    needs = frozenset({"vision_cls"})

    def is_identity(self) -> bool:
        return self.alpha == 0 and self.beta == 0

    def supports(self, family: str) -> bool:
        return super().supports(family) and (self.variant == "mask" or family == "llava")

    def claims(self) -> frozenset[str]:
        return frozenset({"position_ids"}) if self.variant == "official" and not self.is_identity() else frozenset()

    def branches(self, request) -> list[Branch]:
        return [] if self.is_identity() else [Branch(VIEW)]

    def combine(self, views):
        return (1 + self.alpha) * views[ORIGINAL] - self.alpha * views[VIEW]

    def plausibility_cutoff(self):
        return self.beta

    # ---- the outliers and the negative view ------------------------------------------------
    def _outliers(self, session) -> tuple[slice, list, torch.Tensor, torch.Tensor]:
        """(the negative view's input rows, each row's image positions, the (B, P) CLS attention, and the
        (B, k) outlier order per row)."""
        rows = session.view_rows(self.name, VIEW)
        spans = [[s.positions for s in row if s.kind in ("image", "base")] for row in session.image_spans]
        if self.variant == "official" and any(len(row) != 1 for row in spans):
            raise HallucError("damro (official variant): one image per prompt; use variant='mask' for several")
        cls = session.adapter.vision_cls_attention(session.model, session.inputs,
                                                   merged_heads=self.variant == "official")  # (B, P)
        order = cls.float().topk(min(self.k, cls.shape[-1]), dim=-1).indices  # (B, k), most attended first
        return rows, spans, cls, order

    def attention_edits(self, session) -> dict[int, AttentionEdit]:
        if session.view_rows(self.name, VIEW) is None:
            return {}
        rows, spans, cls, order = session.state[self.name] = self._outliers(session)
        image = session.image_mask
        if self.variant == "official":  # visible: the first k slots of each negative row's image
            keep = torch.zeros_like(image, device="cpu")
            for row in range(rows.start, rows.stop):
                keep[row, spans[row][0][:order.shape[-1]].cpu()] = True
        else:
            keep = outlier_columns(cls, spans, self.k, image.shape[1])
        bias = torch.zeros(image.shape)
        bias[rows] = hidden_bias(image[rows], keep[rows])
        # generate's row expansion (beams) repeats each row in place; the edit follows it
        edit = AttentionEdit(columns=image, column_bias=bias.to(image.device))
        return {i: edit for i in range(session.adapter.num_layers(session.model))}

    def hooks(self, session) -> list[HookSpec]:
        if self.variant != "official" or session.view_rows(self.name, VIEW) is None:
            return []
        shift: dict[str, torch.Tensor] = {}

        def negative(running: int, device) -> torch.Tensor:  # (running,) input row of each negative row, or -1
            rows = session.state[self.name][0]
            index = session.input_index(running, device)
            return torch.where((index >= rows.start) & (index < rows.stop), index, -1)

        def reorder(output, ctx):  # projector output (N_img, P, d): outliers into the first k slots
            order = session.state[self.name][3]
            out = output.clone()
            for image, row in enumerate(negative(output.shape[0], output.device).tolist()):
                if row >= 0:
                    out[image, :order.shape[-1]] = output[image, order[row].to(output.device)]
            return out

        def renumber(_, ctx):  # model pre-hook: the shorter sequence's positions
            ids = ctx.kwargs["input_ids"]
            positions = call_positions(ctx.kwargs, ids)
            if not ctx.prefill:
                return {"position_ids": positions - shift["rows"][:, None].to(positions.device)}
            _, spans, _, order = session.state[self.name]
            new = positions.clone()
            for r, row in enumerate(negative(ids.shape[0], ids.device).tolist()):
                if row >= 0:
                    new[r] = compacted_positions(positions[r], spans[row][0].to(ids.device), order.shape[-1])
            shift["rows"] = positions[:, -1] - new[:, -1]  # (rows,) for the decode steps
            return {"position_ids": new}

        return [HookSpec("projector", reorder), HookSpec("model", renumber, kind="forward_pre")]

