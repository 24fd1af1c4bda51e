"""AGLA (An et al., 2024, arXiv 2406.12718): ℓ = ℓ(y | v, x) + α·ℓ(y | v_aug, x), cutoff β on ℓ(v).

v_aug ("local" view) keeps the part of the image the prompt is about and blacks out the rest: an
image-prompt matcher scores the image (see `halluc.engine.matchers`), the score map is min-max
normalised, resized bicubically to the image, blurred (σ = 0.02·longest side) and normalised again,
and every pixel below the top `keep` share is set to 0 before the model's own processor.
Matchers: `blip` (the paper's BLIP-ITM-large GradCAM, keep = 1 − ITC/2) when its checkpoint is on
disk; `lvlm-attention` (the LVLM's own text-to-image attention at one layer, no second model);
`auto` = blip if available, else lvlm-attention with a warning.

Paper / code discrepancies and our choices:
  - the released `eval/sample.py` still copies the KV-cache kwargs inside the loop, so after the
    first token the augmented branch reuses the original branch's cache and the method becomes
    3·ℓ(v) with β = 0.5 (only POPE's first token is real AGLA); ours keeps one cache per view;
  - the released code only patches sampling; ours also works for greedy and beam search;
  - the official mask is computed on the image squashed to 384×384 and that square is what the LVLM
    sees; we mask the image at its own size (same map, same kept share), so both views go through
    the processor alike;
  - `lvlm-attention` is ours (no paper): it has no ITC score, so its keep share defaults to 0.8, the
    middle of what 1 − ITC/2 gives for typical BLIP similarities (0.3-0.5) [inference];
  - InstructBLIP's image tokens are Q-Former queries without a 2-D layout: it needs matcher='blip'.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from halluc.engine.image_views import mask_image
from halluc.engine.matchers import (
    BLIP_ITM,
    MatcherUnavailable,
    blip_match,
    load_blip,
    lvlm_attention_match,
    lvlm_attention_matches,
)
from halluc.engine.views import ORIGINAL, Branch
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register

LVLM_KEEP = 0.8  # keep share for the lvlm-attention matcher, which has no ITC score


@register
@dataclass(frozen=True)
class AGLA(Method):
    """Ensemble with a prompt-focused (masked) copy of the image.

    Args:
        alpha: weight of the augmented view (2.0); 0 with beta 0 is the identity.
        beta: plausibility cutoff on the original view (0.5); 0 = no cutoff.
        matcher: "auto" (blip if its checkpoint is on disk, else lvlm-attention, with a warning),
            "blip" (refuse when absent) or "lvlm-attention".
        matcher_model: BLIP ITM checkpoint (hub id in the local cache, or a directory).
        keep: share of pixels kept; 0 = automatic (blip: 1 − ITC/2; lvlm-attention: 0.8).
        layer: relative depth of the LVLM layer read by lvlm-attention (0.5 = the middle layer).
    """

    name = "agla"
    kind = "decoding"
    paper = "An et al., 2024 (arXiv 2406.12718)"
    formula = "ℓ(v) + α·ℓ(v_masked by image-prompt matching), cutoff β"
    cost = ("1 extra batch row per sample (the masked image): ~2x decode compute and KV memory; per sample one "
            "BLIP forward+backward (blip) or one partial LVLM prefill (lvlm-attention)")

    alpha: float = param(2.0, low=0.0, doc="weight of the augmented view; 0 (with beta 0) = identity")
    beta: float = param(0.5, low=0.0, high=1.0, doc="plausibility cutoff on the original view; 0 = none")
    matcher: str = param("auto", choices=("auto", "blip", "lvlm-attention"), doc="image-prompt matcher")
    matcher_model: str = param(BLIP_ITM, loads=True,
                               doc="BLIP ITM checkpoint: hub id (local cache only) or directory")
    keep: float = param(0.0, low=0.0, high=1.0, doc="share of pixels kept; 0 = automatic")
    layer: float = param(0.5, low=0.0, high=1.0, doc="relative depth of the layer lvlm-attention reads")

    example_params = {"matcher": "lvlm-attention"}
    zero_params = {"alpha": 0.0, "beta": 0.0}
    needs = frozenset({"grid"})  # lvlm-attention lays the attention out on the image grid

    def is_identity(self) -> bool:
        return self.alpha == 0 and self.beta == 0

    def requires(self) -> frozenset[str]:
        return frozenset() if self.matcher == "blip" else self.needs  # BLIP reads the image, not the LVLM's grid

    def branches(self, request):
        if self.is_identity():
            return []
        matcher = self.resolve_matcher(str(request.lvlm.device))
        views: dict[int, Any] = {}

        def view(image, row):
            if not views:  # every row's view at once: the lvlm-attention matcher batches its forwards
                views.update(enumerate(self.augment_all(request.lvlm, request.images, request.prompts, matcher)))
            return views[row]
        return [Branch("augmented", image=view)]

    def combine(self, views):
        return views[ORIGINAL] + self.alpha * views["augmented"]

    def plausibility_cutoff(self):
        return self.beta

    def resolve_matcher(self, device: str) -> str:
        """The matcher to use: `auto` falls back to lvlm-attention (with a warning) when BLIP is absent."""
        if self.matcher == "lvlm-attention":
            return self.matcher
        try:
            load_blip(self.matcher_model, device)
        except MatcherUnavailable as err:
            if self.matcher == "blip":
                raise
            warnings.warn(f"{err}; AGLA falls back to matcher='lvlm-attention'", stacklevel=2)
            return "lvlm-attention"
        return "blip"

    def augment_all(self, lvlm, images, prompts, matcher: str) -> list:
        """The augmented view of every (image, prompt) pair."""
        if matcher == "blip":
            return [self.augment(lvlm, image, prompt, matcher) for image, prompt in zip(images, prompts)]
        depth = lvlm.adapter.num_layers(lvlm.model) - 1
        matches = lvlm_attention_matches(lvlm, images, prompts, layer=round(self.layer * depth))
        return [mask_image(image, m.scores, self.keep or LVLM_KEEP, m.box) for image, m in zip(images, matches)]

    def augment(self, lvlm, image, prompt: str, matcher: str):
        """The augmented view of one image for one prompt."""
        if matcher == "blip":
            match = blip_match(image, prompt, self.matcher_model, str(lvlm.device))
            assert match.itc is not None  # BLIP's matcher always scores image-text match
            auto_keep = min(1 - match.itc / 2, 1 - 1e-5)
        else:
            depth = lvlm.adapter.num_layers(lvlm.model) - 1
            match = lvlm_attention_match(lvlm, image, prompt, layer=round(self.layer * depth))
            auto_keep = LVLM_KEEP
        return mask_image(image, match.scores, self.keep or auto_keep, match.box)
