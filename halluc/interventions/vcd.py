"""VCD (Leng et al., CVPR 2024): ℓ = (1+α)·ℓ(y | v, x) − α·ℓ(y | v', x), plausibility cutoff β on ℓ(v).

v' is the image with DDPM forward noise of step t added to its *normalised* pixel tensor:
v' = sqrt(ᾱ_t)·v + sqrt(1 − ᾱ_t)·ε, with the 1000-step sigmoid schedule of the official
`vcd_add_noise.py` (t = 500 gives 0.863·v + 0.505·ε). The noised view is decoded as extra rows of
the same batch (`halluc.engine.views`), so it keeps its own KV cache at every step.

Paper / code discrepancies and our choices (see the spec, §1-2):
  - the released code only patches sampling (greedy and beams silently fall back to plain decoding);
    ours applies the contrast under greedy, sampling and beam search alike;
  - the released code (before July 2024) let the noised branch reuse the original branch's KV cache
    from token 2 on, so both branches were identical after the first token; ours keeps one cache per
    view (tested);
  - ε is drawn per image from (seed, image content) instead of the global RNG, so an image gets the
    same noise alone or in any batch;
  - the combination uses log-probabilities instead of raw logits: identical after softmax (each view
    shifts by its own constant) and so is the cutoff (`log β + max`, the code's "version 2");
  - β: 0.1 (argparse default) although the POPE launcher passes 0.2; InstructBLIP runs in the
    repo used α = 0.5 (α is not passed there); we keep one default, α = 1.
"""
from __future__ import annotations

from dataclasses import dataclass

from halluc.engine.combine import contrast
from halluc.engine.image_views import DIFFUSION_STEPS, noised_pixels
from halluc.engine.views import ORIGINAL, Branch
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register
from halluc.limits import MAX_SEED


@register
@dataclass(frozen=True)
class VCD(Method):
    """Visual contrastive decoding against a diffusion-noised copy of the image.

    Args:
        alpha: contrast strength (1.0); 0 with beta 0 is the identity (no extra rows are run).
        beta: plausibility cutoff on the original view (0.1); 0 = no cutoff.
        noise_step: DDPM step t of the noise, 0..999 (500).
        noise_seed: seed of the noise (0), combined with each image's content.
    """

    name = "vcd"
    kind = "decoding"
    paper = "Leng et al., CVPR 2024"
    formula = "(1+α)·ℓ(v) − α·ℓ(v_noised), cutoff β"
    cost = "1 extra batch row per sample (the noised image): ~2x decode compute and KV memory"

    alpha: float = param(1.0, low=0.0, doc="contrast strength; 0 (with beta 0) = identity")
    beta: float = param(0.1, low=0.0, high=1.0, doc="plausibility cutoff on the original view; 0 = none")
    noise_step: int = param(500, low=0, high=DIFFUSION_STEPS - 1, doc="DDPM noise step t of the 1000-step schedule")
    noise_seed: int = param(0, low=0, high=MAX_SEED, doc="noise seed (combined with each image's content)")

    example_params = {}
    zero_params = {"alpha": 0.0, "beta": 0.0}

    def is_identity(self) -> bool:
        return self.alpha == 0 and self.beta == 0

    def branches(self, request):
        if self.is_identity():
            return []
        return [Branch("noised", pixels=noised_pixels(request.images, request.processor.image_processor,
                                                      self.noise_seed, self.noise_step))]

    def combine(self, views):
        return contrast(views[ORIGINAL], views["noised"], self.alpha)

    def plausibility_cutoff(self):
        return self.beta
