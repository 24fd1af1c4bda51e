"""Prior contrast (an example method): ℓ = (1+α)·ℓ(v, x) − α·ℓ(v, x + "answer from prior knowledge"),
cutoff β.

The contrast branch keeps the image but changes the instruction, asking the model to answer from
what usually holds instead of what the image shows. Tokens that this prior-driven view favours as
much as the real one are pushed down. (An illustration of a prompt-changing branch, not a paper.)
"""
from __future__ import annotations

from dataclasses import dataclass

from halluc.engine.views import ORIGINAL, Branch
from halluc.interventions import Method, param, register

PRIOR_SUFFIX = " Answer from what is usually true, not from the image."


@register
@dataclass(frozen=True)
class PriorContrast(Method):
    """Contrast against the same image with a prior-seeking instruction.

    Args:
        alpha: contrast strength (0 with beta 0 is the identity).
        beta: plausibility cutoff on the original view (0 = none).
    """

    name = "prior-contrast"
    kind = "decoding"
    paper = "example in docs/writing-a-method.md"
    formula = "(1+α)·ℓ(v, x) − α·ℓ(v, x + prior instruction), cutoff β"
    cost = "1 extra batch row per sample (the changed prompt), its own KV cache"
    zero_params = {"alpha": 0.0, "beta": 0.0}

    alpha: float = param(1.0, low=0.0, doc="contrast strength")
    beta: float = param(0.1, low=0.0, high=1.0, doc="plausibility cutoff on the original view; 0 = none")

    def is_identity(self) -> bool:
        return self.alpha == 0 and self.beta == 0

    def branches(self, request) -> list[Branch]:
        if self.is_identity():
            return []
        return [Branch("prior", prompt=lambda text, sample: text + PRIOR_SUFFIX)]

    def combine(self, views):  # per-view log-probs (N, V) -> (N, V)
        return (1 + self.alpha) * views[ORIGINAL] - self.alpha * views["prior"]

    def plausibility_cutoff(self) -> float:
        return self.beta
