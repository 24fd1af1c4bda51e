"""SID (Huo et al., ICLR 2025, arXiv 2408.02032): self-introspective decoding.

    ℓ = (1+α)·ℓ(y | v, x) − α·ℓ(y | v reduced to its least-attended tokens after layer i, x)

Contrast view (the paper's CT2S, context- and text-aware token selection): a second copy of each
sample whose layers after `select_layer` (i; the code's K − 1 = 1) see only the image tokens that the
newest token attended to *least* in layer i (head mean, last query row), chosen again at every step,
prefill and decode, from that view's own attention. Hidden tokens are still computed and cached
(the code's mask mode) and keep their positions.
Hook points: none. Attention edits: layer i reads the view's last attention row (a `side_output`:
that layer stays on SDPA; a CPU decode step computes the row once and takes the output from it) and
sets a −inf `column_bias` on the view's other image columns in every later layer before it runs (0 on
all other rows; the view's rows come from `session.view_rows`, as DAMRO's).
Cost: 1 extra batch row per sample with its own KV cache (about 2x decode compute and KV memory);
one extra attention row in layer i; layers i+1..L−1 run a column bias for the whole batch (the
Triton kernel on GPU, SDPA with the bias as a float mask on CPU), the bias built once per step.
Families: every family.

Paper / code discrepancies and our choices (spec Part B §2):
  - α: the scripts pass `--cd-alpha 1`, which never reaches the sampler; its fallback α = 0.5 is what
    ran, and is our default (the paper's own values were not retrieved).
  - cutoff: the official greedy rule (both scripts' default) is the argmax of the contrast with no
    plausibility cutoff; its sampling rule masks with β = 0.1 first. Ours the same: `beta` under
    sampling and beam search, `greedy_beta` (0) under greedy.
  - kept tokens: R = 100 of 576 (POPE script) or 50 (CHAIR script) → `keep`, a share of each row's
    image tokens (default 100/576 = 17.4%; `keep=50/576` for captions), so it carries over to other
    grids (Qwen2-VL's dynamic ones; InstructBLIP's 32 queries, where the code's R = 100 fails).
  - the paper describes pruning (fewer tokens after layer i, a saving); the released code masks, so
    it saves nothing, and so do we.
  - selection per row over all of the row's image tokens (the code: batch row 0's single span, used
    for the whole batch, off by one on InstructBLIP); the layers up to i keep the padding mask (the
    code drops it there: batch 1 only); `select_layer = 0` uses layer 0's attention (the code would
    pick a random subset).
  - beam search applies the contrast (the code's `--beam` runs beam *sampling*); the combination is on
    log-probabilities (identical after softmax).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from halluc.engine.combine import contrast
from halluc.engine.views import ORIGINAL, Branch
from halluc.errors import HallucError
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register
from halluc.kernels.edits import AttentionEdit

VIEW = "ct2s"


def least_attended(attention: torch.Tensor, image: torch.Tensor, share: float) -> torch.Tensor:
    """(B, T) bool: per row, the round(share · n) image tokens with the least attention (at least one).

    attention (B, T) head-mean attention of the newest token over the prompt's columns;
    image (B, T) bool. Ties go to the earlier column.
    """
    count = (image.sum(-1, keepdim=True) * share).round_().clamp_min_(1)  # (B, 1)
    order = attention.masked_fill(~image, float("inf")).argsort(dim=-1, stable=True)  # image columns first, least first
    first = torch.arange(order.shape[-1], device=order.device) < count  # (B, T) the first `count` places
    return image & torch.zeros_like(image).scatter_(-1, order, first)  # each column takes its place's verdict


@register
@dataclass(frozen=True)
class SID(Method):
    """Self-introspective decoding.

    Args:
        alpha: contrast strength (the code's effective 0.5; 0 with both cutoffs 0 = identity).
        beta: plausibility cutoff under sampling and beam search (0.1).
        greedy_beta: cutoff under greedy decoding (0: the official greedy rule has none).
        keep: share of each row's image tokens the contrast view keeps (100/576, the POPE script's R).
        select_layer: layer i whose attention chooses them; hidden from layer i + 1 on (1).
    """

    name = "sid"
    kind = "decoding"
    paper = "Huo et al., ICLR 2025 (arXiv 2408.02032)"
    formula = "(1+α)·ℓ(v) − α·ℓ(v with only its least-attended tokens visible after layer i)"
    cost = ("1 extra batch row per sample (own KV cache): ~2x decode compute; edited attention in layers i..L−1 "
            "(a column bias)")

    alpha: float = param(0.5, low=0.0, doc="contrast strength (the code's effective α; scripts pass a dead 1)")
    beta: float = param(0.1, low=0.0, high=1.0, doc="plausibility cutoff under sampling and beam search")
    greedy_beta: float = param(0.0, low=0.0, high=1.0, doc="cutoff under greedy decoding (official: none)")
    keep: float = param(100 / 576, low=0.0, high=1.0, open_low=True,
                        doc="share of image tokens kept in the contrast view (POPE 100/576, CHAIR 50/576)")
    select_layer: int = param(1, low=0, doc="layer whose attention chooses the kept tokens (code: K − 1 = 1)")

    example_params = {"select_layer": 0}  # the 2-layer tiny models mask in layer 1
    zero_params = {"alpha": 0.0, "beta": 0.0, "greedy_beta": 0.0}

    def is_identity(self) -> bool:
        return self.alpha == 0 and self.beta == 0 and self.greedy_beta == 0

    def branches(self, request) -> list[Branch]:
        return [] if self.is_identity() else [Branch(VIEW)]

    def combine(self, views):  # per-view log-probs (N, V) -> (N, V)
        return contrast(views[ORIGINAL], views[VIEW], self.alpha)

    def plausibility_cutoff(self) -> float:
        return self.beta

    def plausibility_cutoff_for(self, decoding) -> float:
        return self.greedy_beta if decoding.mode == "greedy" else self.beta

    def attention_edits(self, session) -> dict[int, AttentionEdit]:
        rows = session.view_rows(self.name, VIEW)
        if rows is None:
            return {}
        n = session.adapter.num_layers(session.model)
        if self.select_layer >= n - 1:
            raise HallucError(f"sid: select_layer {self.select_layer} leaves no later layer to hide tokens in "
                              f"(the model has {n} layers)")
        image = session.image_mask  # (B_in, T) over the prompt
        in_view = torch.zeros(image.shape[0], 1, dtype=torch.bool, device=image.device)
        in_view[rows] = True
        hiding = {i: AttentionEdit(columns=image) for i in range(self.select_layer + 1, n)}  # bias set per step
        per_rows: dict[int, tuple] = {}  # running rows -> (image, hideable) (B, T): fixed for the call

        def select(row, values):  # layer i: (B, H, Tk) the newest token's final attention
            if row.shape[0] not in per_rows:  # beams: each input row repeated in place
                per = row.shape[0] // image.shape[0]
                visible = image.repeat_interleave(per, 0)
                per_rows[row.shape[0]] = visible, visible & in_view.repeat_interleave(per, 0)
            visible, hideable = per_rows[row.shape[0]]
            newest = row[:, :, :image.shape[1]].mean(1)  # (B, T) head mean over the prompt's columns
            hidden = hideable & ~least_attended(newest, visible, self.keep)
            # over every key so far (the later layers see the same ones): no padding per layer; a new tensor
            # each step, so the edits' column cache sees it
            bias = row.new_zeros(row.shape[0], row.shape[-1])  # (B, Tk)
            bias[:, :image.shape[1]].masked_fill_(hidden, float("-inf"))
            for edit in hiding.values():
                edit.column_bias = bias

        return {self.select_layer: AttentionEdit(columns=image, side_output=select), **hiding}
