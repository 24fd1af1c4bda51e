"""M3ID (Favero et al., CVPR 2024, arXiv 2403.14003): ℓ = ℓ_c + c_t·(ℓ_c − ℓ_u), c_t = (1−γ_t)/γ_t = e^{λt} − 1.

ℓ_c is the next-token log-probability with the image, ℓ_u the same prompt without it, and γ_t = e^{−λt}:
the weight of the text-only contrast grows with the number t of tokens generated, as the image's
influence fades over a long answer. Tokens with p_c < β·max p_c are dropped (the VCD-family cutoff).
The text-only prompt is one extra view of each sample, `Branch("text", with_image=False)`, decoded as
rows of the same batch with its own KV cache (`halluc.engine.views`), as PAI's guidance row is; the
combination is `stepped` (it gets the decode step from the engine's combiner).

There is no official code (none was found). We follow the implementation that Woo et al. ship as a
baseline in RITUAL (`ritual_utils/ritual_sample.py` @ 52065a66), the most used; the same group's copy in
AvisC (`avisc_utils/avisc_sample.py` @ 772eba49) was read too. Neither group is M3ID's authors.

Paper / code discrepancies and our choices (spec methods-2026 §3):
  - the step index: RITUAL starts at t = 0, so the first generated token has weight 0 (plain decoding
    with the cutoff) and t counts the tokens already generated; AvisC starts at t = 1 (c = 0.020 on
    the first token). We follow RITUAL (`first_step=0`); `first_step=1` reproduces AvisC;
  - RITUAL combines raw logits, AvisC (and the paper's formula) log-probabilities; per row they differ
    by a constant over the vocabulary, so the softmax, the cutoff set and any temperature / top-p after
    them are the same. We combine log-probabilities (halluc's convention; `return_scores` shows them);
  - AvisC writes the text-only branch's updated kwargs into the wrong variable after each step (that
    branch never gets its cache or its grown mask); RITUAL's branch keeps its own cache, as ours does;
  - the text-only prompt: the code deletes the `<image>` token from LLaVA's prompt (its "\\n" stays);
    ours is the family's chat prompt without the image (`build_inputs(..., None, ...)`), as PAI's;
  - both repositories run M3ID only under sampling (T = 1, top-p 1, 64 tokens); greedy and beam search
    apply the same combined scores (an extension; beams share t);
  - λ = 0.02 is hard-coded in both; whether the paper tunes λ per benchmark or gates the update on
    uncertainty could not be checked offline (no paper text): no gate is added;
  - c_t is capped at 10^6 (reached at t ≈ 691 for λ = 0.02) so that very long generations cannot
    overflow to inf·0 = NaN; below the cap the weight is exact.

Cost: one extra batch row per sample (the text-only prompt with its own KV cache; left-padded to the
image rows' width, so a full row). λ = 0 and β = 0 together are the identity (no extra row).

Families: every family (the text-only view works everywhere).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from halluc.engine.views import ORIGINAL, Branch
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register
from halluc.limits import MAX_PARAMETER

TEXT_VIEW = "text"
MAX_WEIGHT = MAX_PARAMETER  # c_t's cap: beyond it the text-only contrast decides alone anyway


def text_weight(growth: float, t: int) -> float:
    """c_t = (1 − γ_t)/γ_t = e^{λt} − 1 with γ_t = e^{−λt}, capped at MAX_WEIGHT."""
    exponent = growth * t
    return MAX_WEIGHT if exponent >= math.log1p(MAX_WEIGHT) else math.expm1(exponent)


@register
@dataclass(frozen=True)
class M3ID(Method):
    """Multi-modal mutual-information decoding: contrast with the text-only prompt, more as t grows.

    Args:
        growth: λ, how fast the text-only contrast's weight e^{λt} − 1 grows (0.02); 0 = plain decoding.
        beta: plausibility cutoff on the with-image view (0.1); 0 = no cutoff.
        first_step: t at the first generated token: 0 (RITUAL's code) or 1 (AvisC's code).
    """

    name = "m3id"
    kind = "decoding"
    paper = "Favero et al., CVPR 2024 (arXiv 2403.14003)"
    formula = "ℓ_c + (e^{λt} − 1)(ℓ_c − ℓ_u) against the text-only prompt, cutoff β"
    cost = "1 extra batch row per sample (the text-only prompt, own KV cache)"
    stepped = True

    growth: float = param(0.02, low=0.0, doc="λ: growth rate of the text-only contrast's weight e^{λt} − 1")
    beta: float = param(0.1, low=0.0, high=1.0, doc="plausibility cutoff on the with-image view; 0 = none")
    first_step: int = param(0, choices=(0, 1), doc="t at the first generated token: 0 (RITUAL's code), 1 (AvisC's)")

    example_params = {"growth": 0.5, "first_step": 1}
    zero_params = {"growth": 0.0, "beta": 0.0}

    def is_identity(self) -> bool:
        return self.growth == 0 and self.beta == 0

    def branches(self, request) -> list[Branch]:
        return [] if self.is_identity() else [Branch(TEXT_VIEW, with_image=False)]

    def weight(self, step: int) -> float:
        """c_t at decode step `step` (0 at the first generated token)."""
        return text_weight(self.growth, step + self.first_step)

    def combine(self, views, step: int = 0):  # `stepped`: the combiner passes the step
        conditional = views[ORIGINAL]
        return conditional + self.weight(step) * (conditional - views[TEXT_VIEW])

    def plausibility_cutoff(self):
        return self.beta
