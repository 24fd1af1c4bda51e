"""AvisC (Woo et al., 2024, arXiv 2405.17820): attentional vision calibration.

    ℓ = (1+α)·ℓ(y | v, x) − α·ℓ(y | v with only its blind tokens kept, x),  cutoff β on ℓ(v)

Blind tokens, per sample, from the original prompt's attention (the released `avisc_sample.py`):
  1. m_l (T,): layer l's last prompt row, head mean; its image mass a_l = Σ_img m_l, p_l = a_l / Σ_l a_l;
  2. the K layers of largest p, K = #{cumsum(p sorted descending) < γ} + 1;
  3. u = mean over those layers of m_l on the image tokens; blind: u ≥ mean(u) + λ·std(u) (unbiased).
The contrast view is the same prompt and image as a second row of the batch (its own KV cache); at its
prefill every image token that is not blind has its LM input embedding (after the projector) set to 0.
Hook point: `layers.0` (forward pre, prefill): it first runs the auxiliary pass (the batch as given, no
cache, every other method off) that reads each layer's last attention row (a side output) of the
original rows, then zeroes the contrast rows' other image embeddings, the input of layer 0.
Cost: 1 extra batch row per sample (own KV cache); 1 extra prefill of the whole batch (the original rows
are what the user's inputs are, in `custom_generate` too; the other rows are the price of not slicing
each family's image inputs). Decode steps cost what the second row costs, nothing more.
Families: every family (image positions from its image token id).

Paper / code discrepancies and our choices (spec §4):
  - image positions from each row's image tokens, not the code's hard-coded 35..610 (LLaVA) / 0..31
    (InstructBLIP); statistics per sample over all of its image tokens (the code: batch 1, one image);
  - λ: 1.0, what every run script sets (POPE, AMBER, MME); the argparse default is 0.99 (0.95 for
    InstructBLIP POPE). α: 1.0 (POPE, MME; the AMBER script runs 2.5). γ 0.5, β 0.1 everywhere.
  - "blind tokens amplified" (an earlier brief): the code keeps them and zeroes the others; no amplification;
  - the attention is read from an extra prefill (its original rows), as the code reads it from its original
    branch's prefill: the same numbers up to rounding; stacked with an in-model method it is the
    unmodified model's;
  - sorting the layers is stable (ties go to the earlier layer; the code's topk leaves them unspecified);
  - `masking`: "zeros" (the code's default) or "ones"; its unseeded "noise" scheme is left out;
  - on Qwen3-VL the DeepStack features the model adds after its first layers are not zeroed (the code's
    LLaVA has none); the code's NaN fallback (z_blind NaN → z) is not needed: a zero embedding normalises
    to zero;
  - the code samples only; greedy and beam search get the same combination (log-probabilities: the same
    distribution as its raw-logit contrast, and the same cutoff).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from halluc.engine.combine import contrast
from halluc.engine.views import ORIGINAL, Branch
from halluc.interventions.aux import aux_pass, image_forward, reading_attention
from halluc.interventions.base import Method, param
from halluc.interventions.hooks import HookSpec
from halluc.interventions.registry import register
from halluc.kernels.edits import AttentionEdit

VIEW = "blind"


def top_p_layers(mass: torch.Tensor, gamma: float) -> torch.Tensor:
    """(L,) bool: the layers of largest image-attention share, top-p γ. mass (L,) image attention per layer."""
    share = mass / mass.sum()
    order = share.sort(descending=True, stable=True)
    count = (order.values.cumsum(0) < gamma).sum() + 1
    return torch.zeros_like(share, dtype=torch.bool).scatter_(0, order.indices, torch.arange(len(share)) < count)


def blind_tokens(rows: torch.Tensor, gamma: float, lamb: float) -> torch.Tensor:
    """(N,) bool: the over-attended image tokens of one sample. rows (L, N): each layer's head-mean last
    prompt row on the sample's N image tokens."""
    u = rows[top_p_layers(rows.sum(-1), gamma)].mean(0)  # (N,)
    return u >= u.mean() + lamb * u.std()


@register
@dataclass(frozen=True)
class AvisC(Method):
    """Attentional vision calibration: contrast with a view that keeps only the blind image tokens.

    Args:
        alpha: contrast strength (1.0); 0 with beta 0 is the identity (no extra rows, no extra pass).
        beta: plausibility cutoff on the original view (0.1); 0 = none.
        lamb: blind tokens lie λ standard deviations above the mean attention (1.0).
        gamma: top-p share of the layers whose attention chooses them (0.5).
        masking: what the other image tokens' embeddings become in the contrast view ("zeros").
    """

    name = "avisc"
    kind = "decoding"
    paper = "Woo et al., 2024 (arXiv 2405.17820)"
    formula = "(1+α)·ℓ(v) − α·ℓ(v with only its blind (over-attended) image tokens kept), cutoff β"
    cost = "1 extra batch row per sample (own KV cache), 1 extra prefill of the batch at the first step"

    alpha: float = param(1.0, low=0.0, doc="contrast strength (POPE/MME 1.0; AMBER script 2.5)")
    beta: float = param(0.1, low=0.0, high=1.0, doc="plausibility cutoff on the original view; 0 = none")
    lamb: float = param(1.0, doc="blind: attention ≥ mean + λ·std over the image tokens (scripts 1.0)")
    gamma: float = param(0.5, low=0.0, high=1.0, open_low=True, doc="top-p share of the layers read")
    masking: str = param("zeros", choices=("zeros", "ones"), doc="the other image tokens' embeddings become")

    zero_params = {"alpha": 0.0, "beta": 0.0}

    def is_identity(self) -> bool:
        return self.alpha == 0 and self.beta == 0

    def branches(self, request) -> list[Branch]:
        return [] if self.is_identity() else [Branch(VIEW)]

    def combine(self, views):  # per-view log-probs (N, V) -> (N, V)
        return contrast(views[ORIGINAL], views[VIEW], self.alpha)

    def plausibility_cutoff(self) -> float:
        return self.beta

    def blind(self, session) -> list[torch.Tensor]:
        """Per sample, (N,) bool over its image tokens in order: the blind ones (one auxiliary prefill)."""
        adapter, model = session.adapter, session.model
        rows: dict[int, torch.Tensor] = {}

        def reader(layer):
            def read(row, values):  # row (B_in, H, Tk) fp32: the last prompt row's final attention
                rows[layer] = row.mean(1)  # (B_in, Tk) head mean
            return read

        n = adapter.num_layers(model)
        with aux_pass(session, self.name), reading_attention(session, {i: AttentionEdit(side_output=reader(i))
                                                                       for i in range(n)}):
            image_forward(session)  # the batch as given: the original rows are the user's inputs, untouched
        original = session.view_rows(self.name)
        stacked = torch.stack([rows[i][original] for i in range(n)], 1).cpu()  # (S, L, T)
        image = session.image_mask[original].cpu()  # (S, T)
        return [blind_tokens(stacked[s][:, image[s]], self.gamma, self.lamb) for s in range(len(stacked))]

    def hooks(self, session) -> list[HookSpec]:
        view = session.view_rows(self.name, VIEW)
        if view is None:
            return []

        def calibrate(hidden, ctx):  # layers.0 pre-hook: hidden (B, T, d), the LM's input embeddings
            if not ctx.prefill:
                return None
            blind = self.blind(session)
            image = session.image_mask.cpu()  # (B_in, T)
            masked = torch.zeros(hidden.shape[:2], dtype=torch.bool)  # (B, T) running rows (beams in place)
            for row, source in enumerate(ctx.input_rows(hidden.shape[0]).tolist()):
                if view.start <= source < view.stop:
                    columns = image[source].nonzero().flatten()
                    masked[row, columns[~blind[source - view.start]]] = True
            fill = 0.0 if self.masking == "zeros" else 1.0
            return hidden.masked_fill(masked.to(hidden.device)[..., None], fill)

        return [HookSpec("layers.0", calibrate, kind="forward_pre")]
