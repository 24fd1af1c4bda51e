"""yes-bias (control; Yin, Si & Wang 2025, "The Mirage of Performance Gains", arXiv 2504.10020): force
"Yes" whenever the model hesitates between the two answers:

    token = Yes   if p(Yes) + p(No) > mass and |p(Yes) − p(No)| < gap,   else argmax

Read from ustc-hyin/cd_rethink, `inference/spurious_utils/olm_utils.py` (their "output-layer
modification", the `use_olm` branch of a patched greedy search): p = softmax of the processed logits of
the step, YES_INDEX / NO_INDEX the LLaVA-1.5 tokens "▁Yes" (3869) and "▁No" (1939), thresholds 0.2 and
0.5, at every step. A control, not a mitigation: it only moves answers towards Yes.

Paper / code discrepancies and our choices:
  - the code sets the next token directly; ours raises the Yes logit to one above the row's maximum, so
    greedy decoding picks Yes and every other score (and the recorded yes/no evidence) stays finite;
  - YES/NO are each family's own answer tokens ("Yes" encoded alone, `halluc.engine.yes_no`) instead of
    LLaVA's ids; the rule reads only those two tokens, as the code does;
  - the code compares a batch of one with Python `if`; ours decides row by row (batch == single);
  - greedy only, as in the code (its sampling loop has no such branch).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from halluc.engine.yes_no import YesNoTokens
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register


@register
@dataclass(frozen=True)
class YesBias(Method):
    """Answer Yes when p(Yes) + p(No) > mass and |p(Yes) − p(No)| < gap (cd_rethink's output-layer rule).

    Args:
        mass: the answer words' least total probability for the rule to apply (0.2).
        gap: the largest |p(Yes) − p(No)| at which Yes is forced (0.5); 0 = the identity.
    """

    name = "yes-bias"
    category = "control"
    kind = "decoding"
    paper = "Yin et al., arXiv 2504.10020 (cd_rethink olm_utils.py)"
    formula = "Yes if p(Yes)+p(No) > mass and |p(Yes)−p(No)| < gap, else argmax"
    cost = "none"
    modes = ("greedy",)

    mass: float = param(0.2, low=0.0, high=2.0, doc="least p(Yes) + p(No) for the rule to apply")
    gap: float = param(0.5, low=0.0, high=1.0, doc="largest |p(Yes) − p(No)| at which Yes is forced; 0 = identity")

    example_params = {"mass": 0.0, "gap": 1.0}
    zero_params = {"gap": 0.0}

    def is_identity(self) -> bool:
        return self.gap == 0

    def logits_processors(self, session):
        if self.is_identity():
            return []
        tokens = YesNoTokens.required(session.request.lvlm.processor.tokenizer, self.name)
        return [ForceYes(tokens.yes_ids[0], tokens.no_ids[0], self.mass, self.gap)]


@dataclass(frozen=True)
class ForceYes:
    """The logits processor: (R, V) scores -> the same, Yes raised above every other token where forced."""

    yes: int
    no: int
    mass: float
    gap: float

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = scores.float().softmax(-1)  # (R, V)
        p_yes, p_no = probs[:, self.yes], probs[:, self.no]
        forced = (p_yes + p_no > self.mass) & ((p_yes - p_no).abs() < self.gap)  # (R,)
        if not bool(forced.any()):
            return scores
        out = scores.clone()
        out[forced, self.yes] = scores[forced].max(-1).values + 1
        return out
