"""Head image scaling (an example method): in chosen heads of chosen layers, multiply the
unnormalised attention to image tokens by c, i.e. s_ij ← s_ij + log c for image keys j.

Written with the attention escape hatch (`score_mod`), so it is one file: the function runs on
the torch reference of the "halluc" attention backend (any device). No extra forward passes.
(An illustration of an in-model method, not a paper.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from halluc.engine.steps import check_layers, layer_indices
from halluc.interventions import Method, param, register
from halluc.kernels import AttentionEdit


@register
@dataclass(frozen=True)
class HeadImageScale(Method):
    """Scale the attention to image tokens in chosen heads.

    Args:
        scale: c, the factor on image attention before normalisation (1 = identity).
        heads: query heads to edit; () = every head.
        layers: decoder layers to edit; () = every layer.
    """

    name = "head-image-scale"
    paper = "example in docs/writing-a-method.md"
    formula = "s_ij ← s_ij + log c on image keys j, chosen heads and layers"
    cost = "none (edited attention on the torch reference path)"
    zero_params = {"scale": 1.0}

    scale: float = param(1.5, low=0.0, open_low=True, doc="factor on unnormalised image attention (1 = identity)")
    heads: tuple = param((), doc="query heads to edit; () = all")
    layers: tuple = param((), doc="decoder layers to edit; () = all")

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "heads", layer_indices(self.name, "heads", self.heads))
        object.__setattr__(self, "layers", layer_indices(self.name, "layers", self.layers))

    def is_identity(self) -> bool:
        return self.scale == 1.0

    def attention_edits(self, session) -> dict[int, AttentionEdit]:
        if self.is_identity():
            return {}
        n = session.adapter.num_layers(session.model)
        chosen = check_layers(self.name, self.layers or tuple(range(n)), n)
        heads, bias = self.heads, math.log(self.scale)

        def scale_image_attention(scores, where):  # (B, H, Tq, Tk) fp32 scores; `where` broadcasts to them
            in_heads = torch.isin(where.head, torch.tensor(heads, device=scores.device)) if heads else True
            return scores + torch.where(where.columns & in_heads, bias, 0.0)

        return {layer: AttentionEdit(score_mod=scale_image_attention) for layer in chosen}
