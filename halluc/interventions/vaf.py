"""ClearSight / VAF (Yin et al., CVPR 2025, arXiv 2503.13107): visual amplification fusion.

    s_rj ← enhance · s_rj on image keys j,  suppress · s_rj on system-prompt keys j,
    for the query rows r after the image, in the middle layers, before the mask and the softmax

s = q·kᵀ/√d are the raw attention scores. Scaling a score rather than a probability sharpens the
distribution within each block (positive scores grow, negative ones shrink), as the code does.
Positions come from the adapter: image keys are `session.image_mask`, system keys
`adapter.system_mask` (everything the chat template puts before the first image: BOS, the system
turn, the user header; LLaVA-1.5 with the vicuna prompt: positions 0..34, the code's `SYS_LEN`),
rows after the image are those at or past the row's last image token + 1 (every decode row).
Hook points: none; an `AttentionEdit` with a `score_mod` per chosen layer (the torch reference).
Cost: no extra pass or row; the chosen layers' attention runs as edited attention.
Families: every family. InstructBLIP's query tokens come first, so it has no system span and only
the image amplification acts; on Qwen2-VL the vision-start marker counts as system text.

Paper / code discrepancies and our choices (spec Part A §2):
  - layers: the code edits layers 9..14 of LLaVA-1.5-7B's 32 (`8 < i < 15`), the paper's "middle
    layers"; other depths get floor(9n/32)..floor(14n/32) (28 layers: 7..12; 40 layers: 11..17; the
    3-layer toy-llava: 0..1; 2-layer tiny models: 0). No official values exist beyond 32 layers.
  - heads: the paper speaks of "visual perception heads"; the released code edits every head (and has
    no head selection), as do we.
  - enhance 1.15 and suppress 0.95 are the launch script's values (argparse defaults 1/1, i.e. off);
    read as the paper's 1 + α and 1 − β (not verified: the paper's equation was not retrieved).
  - the code hard-codes positions 35 / 576 of LLaVA-1.5's vicuna template, which any other template,
    model or image count silently breaks; ours reads them per row (left padding included).
  - pre-softmax scaling as in the code, on fp32 scores (the code scales fp16 scores).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from halluc.engine.steps import check_layers, depth_band, layer_indices
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register
from halluc.kernels.edits import AttentionEdit, pad_columns


def score_scale(image: torch.Tensor, system: torch.Tensor, enhance: float, suppress: float) -> torch.Tensor:
    """(B, T) fp32 factor per key column: `enhance` on image, `suppress` on system tokens, 1 elsewhere."""
    scale = torch.ones(image.shape, device=image.device)
    return scale.masked_fill(image, enhance).masked_fill(system, suppress)


def rows_after_image(image: torch.Tensor) -> torch.Tensor:
    """(B,) long: the first key position after each row's last image token (the row length without one,
    so that no prefill row qualifies)."""
    positions = torch.arange(image.shape[1], device=image.device)
    return torch.where(image, positions + 1, 0).amax(-1).masked_fill(~image.any(-1), image.shape[1])


@register
@dataclass(frozen=True)
class VAF(Method):
    """Visual amplification fusion (ClearSight).

    Args:
        enhance: factor on the raw scores of image keys (script: 1.15; 1 = off).
        suppress: factor on the raw scores of system-prompt keys (script: 0.95; 1 = off).
        layers: decoder layers to edit; () = 9..14 of 32, scaled by depth.
    """

    name = "vaf"
    paper = "Yin et al. (ClearSight), CVPR 2025 (arXiv 2503.13107)"
    formula = "s ← 1.15·s on image keys, 0.95·s on system keys; rows after the image, middle layers, pre-softmax"
    cost = "none (edited attention in the middle layers)"

    enhance: float = param(1.15, low=0.0, open_low=True, doc="factor on raw image scores (1 = off)")
    suppress: float = param(0.95, low=0.0, open_low=True, doc="factor on raw system-prompt scores (1 = off)")
    layers: tuple = param((), doc="decoder layers to edit; () = 9..14 of 32 scaled by depth")

    zero_params = {"enhance": 1.0, "suppress": 1.0}

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layers", layer_indices(self.name, "layers", self.layers))

    def is_identity(self) -> bool:
        return self.enhance == 1.0 and self.suppress == 1.0

    def chosen_layers(self, num_layers: int) -> tuple[int, ...]:
        return check_layers(self.name, self.layers or depth_band(9, 14, num_layers), num_layers)

    def attention_edits(self, session) -> dict[int, AttentionEdit]:
        if self.is_identity():
            return {}
        image = session.image_mask  # (B_in, T)
        scale = score_scale(image, session.adapter.system_mask(session.model, session.inputs), self.enhance,
                            self.suppress)
        first_row = rows_after_image(image)  # (B_in,)

        def amplify(scores, where):  # (B, H, Tq, Tk) fp32 raw scores
            per = scores.shape[0] // scale.shape[0]  # beams: each input row repeated in place
            factor = pad_columns(scale.repeat_interleave(per, 0), scores.shape[-1], 1.0)[:, None, None, :]
            after = where.query >= first_row.repeat_interleave(per)[:, None, None, None]  # (B, 1, Tq, 1)
            return torch.where(after, scores * factor, scores)

        layers = self.chosen_layers(session.adapter.num_layers(session.model))
        return {layer: AttentionEdit(columns=image, score_mod=amplify) for layer in layers}
