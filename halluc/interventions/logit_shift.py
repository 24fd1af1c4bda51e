"""logit-shift (control): add δ to every "Yes" token's logit, ℓ'(Yes) = ℓ(Yes) + δ, at every step.

The purest balance shift: the yes−no margin of every sample moves by exactly δ, so the ranking of the
samples, and with it AUROC and average precision, cannot change, while F1 and the yes ratio move
along vanilla's calibration frontier. It is the report's test oracle: a method that does no more than
this has ΔAUROC 0 and no gain over the frontier. Not in cd_rethink's code; it is the threshold that its
two spurious adjustments (`yes-prompt`, `yes-bias`) move by other means.

Choices: "Yes" is every variant of the family's answer word (`halluc.engine.yes_no`: "Yes", "yes",
"YES", with and without a leading space); the shift applies at every step (a yes/no answer is decided at
the first; captions are not what it is for); δ < 0 pushes towards No.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from halluc.engine.yes_no import YesNoTokens
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register


@register
@dataclass(frozen=True)
class LogitShift(Method):
    """Add `delta` to the logits of the Yes tokens.

    Args:
        delta: the shift (1.0); negative pushes towards No; 0 = the identity.
    """

    name = "logit-shift"
    category = "control"
    kind = "decoding"
    paper = "control (a threshold on the yes−no margin)"
    formula = "ℓ(Yes) ← ℓ(Yes) + δ"
    cost = "none"

    delta: float = param(1.0, low=-100.0, high=100.0, doc="added to every Yes token's logit; 0 = identity")

    example_params = {"delta": 5.0}
    zero_params = {"delta": 0.0}

    def is_identity(self) -> bool:
        return self.delta == 0

    def logits_processors(self, session):
        if self.is_identity():
            return []
        tokens = YesNoTokens.required(session.request.lvlm.processor.tokenizer, self.name)
        return [ShiftYes(tuple(tokens.yes_ids), self.delta)]


@dataclass(frozen=True)
class ShiftYes:
    """The logits processor: (R, V) scores with δ added to the Yes columns."""

    yes: tuple[int, ...]
    delta: float

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = scores.clone()
        out[:, list(self.yes)] += self.delta
        return out
