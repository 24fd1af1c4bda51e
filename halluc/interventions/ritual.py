"""RITUAL (Woo et al., 2024, arXiv 2405.17821): ℓ = ℓ(y | v, x) + α·ℓ(y | T(v), x), cutoff β on ℓ(v).

T is one random transformation per sample, drawn uniformly from the official pool (torchvision v2
in `eval_bench/*_eval_llava.py`; here in PIL): horizontal flip, vertical flip, rotation by a uniform
angle in [−180°, 180°] (black fill), colour jitter (brightness/contrast/saturation 1, hue 0.5, random
order), Gaussian blur (kernel 13, σ ∈ [1.5, 2]; PIL's blur radius is σ), random resized crop to
336 px (scale 0.08-1, ratio 3/4-4/3). It is applied to the raw image before the model's processor.
The combination is complementary (a sum), not contrastive.

`ritual-vcd` is RITUAL + VCD, which the v1 README reports but the released code cannot run (its
branches are an exclusive if/elif). We use the natural reading of the two formulas:
ℓ = (1+α_vcd)·ℓ(v) − α_vcd·ℓ(v_noised) + α·ℓ(T(v)), cutoff β on ℓ(v), three views in one batch.

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

from halluc.decoding.branches import ORIGINAL, Branch
from halluc.decoding.image_views import DIFFUSION_STEPS, noised_pixels, random_transform
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register


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
        seed: seed of the transformation draw (0), combined with each image's content.
    """

    name = "ritual"
    kind = "decoding"
    paper = "Woo et al., 2024 (arXiv 2405.17821)"
    formula = "ℓ(v) + α·ℓ(T(v)), cutoff β"
    cost = "1 extra batch row per sample (the transformed image): ~2x decode compute and KV memory"

    alpha: float = param(3.0, low=0.0, doc="weight of the transformed view; 0 (with beta 0) = identity")
    beta: float = param(0.1, low=0.0, high=1.0, doc="plausibility cutoff on the original view; 0 = none")
    seed: int = param(0, low=0, doc="transformation seed (combined with each image's content)")

    def is_identity(self) -> bool:
        return self.alpha == 0 and self.beta == 0

    def branches(self, session):
        return [] if self.is_identity() else [transformed_branch(self.seed)]

    def combine(self, views):
        return views[ORIGINAL] + self.alpha * views["transformed"]


@register
@dataclass(frozen=True)
class RitualVCD(Method):
    """RITUAL and VCD together: the transformed view added, the noised view contrasted.

    Args:
        alpha: weight of the transformed view (3.0, RITUAL's).
        vcd_alpha: contrast strength against the noised view (1.0, VCD's).
        beta: plausibility cutoff on the original view (0.1); alpha = vcd_alpha = beta = 0 is the identity.
        noise_step: DDPM step of the noise (500).
        seed: seed of both draws (0), combined with each image's content.
    """

    name = "ritual-vcd"
    kind = "decoding"
    paper = "Woo et al., 2024 (RITUAL v1 README) + Leng et al., CVPR 2024"
    formula = "(1+α_vcd)·ℓ(v) − α_vcd·ℓ(v_noised) + α·ℓ(T(v)), cutoff β"
    cost = "2 extra batch rows per sample (transformed and noised images): ~3x decode compute and KV memory"

    alpha: float = param(3.0, low=0.0, doc="weight of the transformed view")
    vcd_alpha: float = param(1.0, low=0.0, doc="contrast strength against the noised view")
    beta: float = param(0.1, low=0.0, high=1.0, doc="plausibility cutoff on the original view; 0 = none")
    noise_step: int = param(500, low=0, high=DIFFUSION_STEPS - 1, doc="DDPM noise step t of the 1000-step schedule")
    seed: int = param(0, low=0, doc="seed of the transformation and the noise")

    def is_identity(self) -> bool:
        return self.alpha == 0 and self.vcd_alpha == 0 and self.beta == 0

    def branches(self, session):
        if self.is_identity():
            return []
        noise = noised_pixels(session.images, session.processor.image_processor, self.seed, self.noise_step)
        return [transformed_branch(self.seed), Branch("noised", pixels=noise)]

    def combine(self, views):
        return ((1 + self.vcd_alpha) * views[ORIGINAL] - self.vcd_alpha * views["noised"]
                + self.alpha * views["transformed"])
