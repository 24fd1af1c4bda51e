"""apc (control; Yin, Si & Wang 2025, "The Mirage of Performance Gains", arXiv 2504.10020): vanilla
decoding with only the adaptive plausibility cutoff of contrastive decoding,

    ℓ'(y) = ℓ(y)  if ℓ(y) ≥ log β + max ℓ,   else −inf

Read from ustc-hyin/cd_rethink, `inference/spurious_utils/apc_utils.py` (the `use_apc` branch of a
patched sampling loop): its "contrastive" forward gets a copy of the same inputs, so
(1+α)·ℓ − α·ℓ_cd = ℓ and only the cutoff (version 2, on the raw logits, β = `cd_beta`, default 0.2)
is left; temperature and top-p are applied after it. Under sampling it removes the tail that
contrastive methods also remove, turning sampling into near-greedy decoding: a sampled contrastive
method's gain over sampled vanilla that apc matches comes from the cutoff, not the contrast. Under
greedy decoding it is the identity (the argmax always survives the cutoff).

Paper / code discrepancies and our choices:
  - the code runs the model twice on the same inputs; ours runs it once (the combination is the
    original view itself);
  - the cutoff is taken on log-probabilities instead of logits: the same tokens survive (a row's shift
    cancels in ℓ − max ℓ);
  - stacked with a contrastive method, the largest β of the two applies (`halluc.engine.combine`).
"""
from __future__ import annotations

from dataclasses import dataclass

from halluc.engine.views import ORIGINAL
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register


@register
@dataclass(frozen=True)
class APC(Method):
    """Adaptive plausibility cutoff alone: tokens with p < β · max p are dropped (cd_rethink's apc).

    Args:
        beta: the cutoff (0.2, the code's `cd_beta` default); 0 = the identity.
    """

    name = "apc"
    category = "control"
    kind = "decoding"
    paper = "Yin et al., arXiv 2504.10020 (cd_rethink apc_utils.py)"
    formula = "ℓ(y) if ℓ(y) ≥ log β + max ℓ, else −inf"
    cost = "none (one log-softmax per step)"
    cutoff_alone = True

    beta: float = param(0.2, low=0.0, high=1.0, doc="plausibility cutoff: drop tokens with p < beta · max p; "
                        "0 = identity")

    example_params = {}
    zero_params = {"beta": 0.0}

    def is_identity(self) -> bool:
        return self.beta == 0

    def combine(self, views):
        return views[ORIGINAL]

    def plausibility_cutoff(self):
        return self.beta
