"""VHR (He et al., ACL 2025, arXiv 2412.13949): reinforce the vision-aware heads of chosen layers.

    VHD_{l,i} = ||A_{l,i}(y | x_V, x_T) − A_{l,i}(y | x_T)||_2
    A_{l,i} ← α·A_{l,i}  for the heads with VHD_{l,i} > median_i VHD_{l,*}

Hook points: `layers.0` (forward pre: starts the text-only pass at the first step) and
`layers.{l}.attn.o_proj` (forward pre: the head outputs (B, T, H·D) before W_O) for each chosen l.

How one generate call goes:
  1. First step (prefill), on entering decoder layer 0 (not the `model` point: InstructBLIP's
     `generate` never calls the top-level forward): the prompts *without* their images run
     through the model once (one extra forward, B rows, no cache, edits off). The o_proj pre-hooks
     only record each head's output at the last prompt position (the one predicting y_1).
  2. The with-image prefill goes on through the layers. At each chosen layer l, the o_proj
     pre-hook takes every head's output at the last position, computes VHD against the recorded
     text-only output of that layer, zeroes the outliers, keeps the heads above the layer median,
     and scales them by α at every position. Layers run in order, so layer l's VHD already sees the
     reinforcement of every earlier layer (paper Alg. 1) -- within a single with-image pass.
  3. Every later step scales the same heads (fixed at t = 0, so Q/K/V stay consistent with the cache).
Cost: one text-only forward at the first step; then one elementwise scale per chosen layer.

Outlier filter (Eq. 6): VHD is zeroed where VHD > μ+σ *and* TA = ||A(text-only)||² > μ+σ over the
layer's heads (heads whose output surges without the image); σ is torch's unbiased std.
Selection (Eq. 7): strict `>` the lower median (for an even head count with distinct values this is
the same top half as the mean-of-middles median).

Default layers: layer 1 plus the last 14 of 32 for LLaVA-1.5 / LLaVA-NeXT (the paper's
[1, 18..31]); the last 18 of 32 for InstructBLIP. Other depths scale the count: layer 1 (if any)
plus the last round(14·n/32) layers (round(18·n/32) for InstructBLIP), at least one; the 2-layer
tiny models get layer 1 only. Qwen2-VL / 2.5-VL use the LLaVA rule (the paper has no Qwen numbers).

Paper / code discrepancies and our choices (the official source was not readable, see the spec):
  - whether the text-only branch is itself reinforced layer by layer is not stated: ours is the
    unmodified model (the reference "what the head does without the image"), which keeps the cost at
    exactly one extra pass;
  - scaling applies at every prompt position at prefill (keeps the cached keys of later layers
    consistent with the decode steps), not only at the last one;
  - the text-only branch is the family's chat prompt without the image (`build_inputs(..., None, ...)`),
    not the with-image sequence with the 576 image tokens cut out (so LLaVA's newline after
    `<image>` is absent from it, as in any text-only prompt of the template).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from halluc.engine.steps import check_layers, layer_indices
from halluc.interventions.aux import aux_pass, text_only_forward
from halluc.interventions.base import Method, param
from halluc.interventions.hooks import HookSpec
from halluc.interventions.registry import register


def default_layers(family: str, num_layers: int) -> tuple[int, ...]:
    """The paper's layers ([1] + last 14 of 32; last 18 of 32 for InstructBLIP), scaled by depth."""
    share, first = (18, ()) if family == "instructblip" else (14, (1,) if num_layers > 1 else ())
    last = max(1, round(share * num_layers / 32))
    return tuple(sorted(set(first) | set(range(num_layers - last, num_layers))))


def select_heads(image: torch.Tensor, text: torch.Tensor, outlier_filter: bool = True) -> torch.Tensor:
    """(B, H) bool: heads whose VHD is above the layer median. image, text: (B, H, D) head outputs."""
    vhd = (image.float() - text.float()).norm(dim=-1)  # (B, H)
    if outlier_filter:
        ta = text.float().pow(2).sum(-1)  # (B, H) text-only output energy
        surge = (vhd > vhd.mean(-1, keepdim=True) + vhd.std(-1, keepdim=True)) & \
                (ta > ta.mean(-1, keepdim=True) + ta.std(-1, keepdim=True))
        vhd = vhd.masked_fill(surge, 0.0)
    return vhd > vhd.median(-1, keepdim=True).values


@dataclass
class _State:
    text: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B_prompts, H, D) text-only
    scale: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (rows, H), fixed at t = 0
    vhd: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (rows, H) VHD at t = 0 (diagnostics)


@register
@dataclass(frozen=True)
class VHR(Method):
    """Vision-aware Head Reinforcement.

    Args:
        alpha: scale of the selected heads' outputs (paper: 2; 1 = identity; the paper's α = 4 collapses).
        outlier_filter: zero the VHD of heads that surge without the image (Eq. 6; paper: on).
        layers: decoder layers to reinforce; () = the paper's choice scaled by depth (module docstring).
    """

    name = "vhr"
    fixed_rows = True  # per-row state from the prefill: refused with OPERA's re-batching search
    paper = "He et al., ACL 2025 (arXiv 2412.13949)"
    formula = "A_{l,i} ← α·A_{l,i} for heads with ||A(x_V,x_T) − A(x_T)|| > median"
    cost = "1 extra text-only forward at the first step (prefill), then an elementwise scale per layer"
    alpha: float = param(2.0, low=0.0, doc="scale of the selected heads (1 = identity)")
    outlier_filter: bool = param(True, doc="drop heads whose output surges without the image (Eq. 6)")
    layers: tuple = param((), doc="decoder layers to reinforce; () = [1] + last 14 of 32, scaled by depth")

    zero_params = {"alpha": 1.0}

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layers", layer_indices(self.name, "layers", self.layers))

    def is_identity(self) -> bool:
        return self.alpha == 1.0

    def chosen_layers(self, family: str, num_layers: int) -> tuple[int, ...]:
        return check_layers(self.name, self.layers or default_layers(family, num_layers), num_layers)

    def new_state(self) -> _State:
        return _State()

    def hooks(self, session) -> list[HookSpec]:
        if self.is_identity():
            return []
        adapter, model = session.adapter, session.model
        heads = adapter.num_heads(model)

        def start(hidden, ctx):  # layers.0 pre-hook: the text-only pass, once, at prefill
            if ctx.prefill:
                ctx.state.text.clear(), ctx.state.scale.clear(), ctx.state.vhd.clear()
                with aux_pass(session, self.name):
                    text_only_forward(session)

        def reinforce(x, ctx):  # o_proj pre-hook: x (B, T, H*D); also in the own text-only pass
            state, layer = ctx.state, ctx.layer
            if ctx.in_aux:
                state.text[layer] = x[:, -1].float().view(x.shape[0], heads, -1)
                return None
            if layer not in state.scale:  # first step: choose this layer's heads now
                image = x[:, -1].float().view(x.shape[0], heads, -1)
                text = state.text[layer][ctx.sample_rows(x.shape[0], x.device)]
                chosen = select_heads(image, text, self.outlier_filter)
                state.vhd[layer] = (image - text).norm(dim=-1)
                state.scale[layer] = torch.where(chosen, self.alpha, 1.0).to(x.dtype)
            scale = state.scale[layer]  # (B, H)
            return (x.view(*x.shape[:-1], heads, -1) * scale[:, None, :, None]).view_as(x)

        specs = [HookSpec("layers.0", start, kind="forward_pre")]
        for layer in self.chosen_layers(session.lvlm.family, adapter.num_layers(model)):
            specs.append(HookSpec(f"layers.{layer}.attn.o_proj", reinforce, kind="forward_pre", aux=True))
        return specs
