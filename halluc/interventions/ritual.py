"""RITUAL (Woo et al., 2024, arXiv 2405.17821): ℓ = ℓ(y | v, x) + α·ℓ(y | T(v), x), cutoff β on ℓ(v).

T is one random transformation per sample, drawn uniformly from the official pool (torchvision v2
in `eval_bench/*_eval_llava.py`; here in PIL): horizontal flip, vertical flip, rotation by a uniform
angle in [−180°, 180°] (black fill), colour jitter (brightness/contrast/saturation 1, hue 0.5, random
order), Gaussian blur (kernel 13, σ ∈ [1.5, 2]; PIL's blur radius is σ), random resized crop to
336 px (scale 0.08-1, ratio 3/4-4/3). It is applied to the raw image before the model's processor.
The combination is complementary (a sum), not contrastive.

RITUAL + VCD, which the v1 README reports but the released code cannot run (its branches are an
exclusive if/elif), is plain stacking, `method=["ritual", "vcd"]` (alias `ritual-vcd`):
ℓ = (1+α_vcd)·ℓ(v) − α_vcd·ℓ(v_noised) + α·ℓ(T(v)), both cutoffs on ℓ(v), three views in one batch.

Paper / code discrepancies and our choices:
  - the released code only patches sampling; ours also works for greedy and beam search;
  - T and its parameters are drawn per image from (seed, image content) instead of Python's global
    `random` stream, so a sample gets the same view alone or in any batch;
  - PIL stands in for torchvision (not installable here): same pool and parameter ranges; the
    rotation's nearest resampling and the blur differ from torchvision's in rounding only;
  - RITUAL+ (the model picks T itself) is not in the released code and not implemented.
"""
from __future__ import annotations

from dataclasses import dataclass

from halluc.engine.image_views import random_transform
from halluc.engine.views import ORIGINAL, Branch
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register
from halluc.limits import MAX_SEED


def transformed_branch(seed: int) -> Branch:
    """The view T(v): one random transformation of each image."""
    return Branch("transformed", image=lambda image, row: random_transform(image, seed)[1])


@register
@dataclass(frozen=True)
class RITUAL(Method):
    """Ensemble with a randomly transformed copy of the image.

    Args:
        alpha: weight of the transformed view (3.0); 0 with beta 0 is the identity.
        beta: plausibility cutoff on the original view (0.1); 0 = no cutoff.
        view_seed: seed of the transformation draw (0), combined with each image's content.
    """

    name = "ritual"
    kind = "decoding"
    paper = "Woo et al., 2024 (arXiv 2405.17821)"
    formula = "ℓ(v) + α·ℓ(T(v)), cutoff β"
    cost = "1 extra batch row per sample (the transformed image): ~2x decode compute and KV memory"

    alpha: float = param(3.0, low=0.0, doc="weight of the transformed view; 0 (with beta 0) = identity")
    beta: float = param(0.1, low=0.0, high=1.0, doc="plausibility cutoff on the original view; 0 = none")
    view_seed: int = param(0, low=0, high=MAX_SEED, doc="transformation seed (combined with each image's content)")

    zero_params = {"alpha": 0.0, "beta": 0.0}

    def is_identity(self) -> bool:
        return self.alpha == 0 and self.beta == 0

    def branches(self, request):
        return [] if self.is_identity() else [transformed_branch(self.view_seed)]

    def combine(self, views):
        return views[ORIGINAL] + self.alpha * views["transformed"]

    def plausibility_cutoff(self):
        return self.beta
