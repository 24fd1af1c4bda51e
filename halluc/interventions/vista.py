"""VISTA (Li et al., ICML 2025, arXiv 2502.03628): visual steering vector + self-logits augmentation.

    v_l = h_l(x_V, x_T) − h_l(x_T) at the last prompt token;
    m' = normalize(normalize(m) + λ·(1 + max(0, cos(m, −v_l)))·v̂_l)·||m||   (m: layer l's MLP output);
    logits = (1 − γ)·logits + γ·mean_{l ∈ band} lm_head(h_l)

Hook points: `layers.0` (forward pre: starts the two steering passes at the first step),
`layers.{l}` (forward: records h_l, the residual stream after layer l, at the last position),
`layers.{l}.mlp` (forward: steers the MLP output, every layer, every position, every step),
`lm_head` (forward: mixes the last position's logits with the band's early-exit logits).

Visual steering vector (VSV), per sample: on entering decoder layer 0 at the first step, the batch
runs once as given (with images) and once as its text-only prompts (the image placeholder removed),
both unsteered (no cache, edits off), and v_l is the difference of their last-token h_l. With one
image per vector the official PCA(rank 1) over (pos − neg) degenerates to that difference (spec §5.1).
Cost: 2 extra forwards at the first step; per step one elementwise op per layer and |band| extra
lm_head rows (last position only).

Defaults come per benchmark from the released run scripts, as presets:
    chair  λ = 0.17, γ = 0.3      pope  λ = 0.01, γ = 0.3      mmhal  λ = 0.1, γ = 0.3
`lam` / `gamma` override the preset. λ = 0 drops the steering (and its two passes), γ = 0 drops SLA;
both 0 is the identity.

Paper / code discrepancies and our choices:
  - λ scale: the released code's λ is on a different scale from the paper's (the author, issue #2:
    "a smaller lambda consistently yields a better performance for the released version"). We
    implement the released formula above, so λ is on the *code's* scale and the presets are the
    released scripts' values; the paper's λ values do not transfer. λ > 0.15 can give empty captions
    (issue #2); λ is task-specific (issue #4: ~0.1-0.2 open-ended, ~0.01 yes/no).
  - SLA band: the code averages decoder outputs 25..30 of 32 (6 layers) where the paper describes
    5-layer windows; we follow the code, scaled by depth: floor(25n/32)..floor(30n/32), at least one
    layer (the tiny models: layer 1). The code feeds those states to lm_head without the final
    norm; so do we, unless `sla_norm=True` (the usual logit-lens reading).
  - the steered MLP output keeps the model dtype (the code hard-casts to fp16).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from halluc.engine.steps import layer_indices
from halluc.errors import HallucError
from halluc.interventions.aux import aux_pass, image_forward, last_token, text_only_forward
from halluc.interventions.base import Method, param
from halluc.interventions.hooks import HookSpec
from halluc.interventions.registry import register
from halluc.limits import MAX_PARAMETER, check_number
from halluc.modeling.lvlm import execution_device

PRESETS = {"chair": (0.17, 0.3), "pope": (0.01, 0.3), "mmhal": (0.1, 0.3)}  # (λ, γ), released run scripts


def steer(m: torch.Tensor, v: torch.Tensor, lam: float) -> torch.Tensor:
    """Norm-preserving injection: m (B, T, d) MLP output, v (B, d) steering vector -> (B, T, d)."""
    x, v = m.float(), v.float()[:, None, :]
    sim = 1.0 + F.cosine_similarity(x, -v, dim=-1).clamp_min(0.0)  # (B, T)
    y = F.normalize(x, dim=-1) + lam * sim[..., None] * F.normalize(v, dim=-1)
    return (F.normalize(y, dim=-1) * x.norm(dim=-1, keepdim=True)).to(m.dtype)


def mix_logits(final: torch.Tensor, early: torch.Tensor, gamma: float) -> torch.Tensor:
    """SLA: final (B, V) logits, early (L, B, V) early-exit logits -> (1 − γ)·final + γ·mean_l early."""
    return ((1.0 - gamma) * final.float() + gamma * early.float().mean(0)).to(final.dtype)


def sla_band(num_layers: int) -> tuple[int, ...]:
    """The released code's layers 25..30 of 32 (decoder outputs), scaled by depth."""
    start, end = (25 * num_layers) // 32, (30 * num_layers) // 32
    end = min(max(start, end), num_layers - 1)
    return tuple(range(min(start, end), end + 1))


@dataclass
class _State:
    record: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (rows, d) of the current pass
    vectors: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (input rows, d) v_l


@register
@dataclass(frozen=True)
class VISTA(Method):
    """Visual Information Steering with Token-logit Augmentation.

    Args:
        preset: benchmark defaults of the released scripts ("chair", "pope", "mmhal").
        lam: steering strength λ (code scale); None = the preset's. 0 = no steering.
        gamma: SLA weight γ; None = the preset's (0.3). 0 = no SLA.
        sla_layers: early-exit layers averaged by SLA; () = floor(25n/32)..floor(30n/32).
        sla_norm: apply the final norm to the early-exit states (the code does not).
    """

    name = "vista"
    paper = "Li et al., ICML 2025 (arXiv 2502.03628)"
    formula = "m' = norm(norm(m) + λ(1+cos⁺)v̂)·|m|;  ℓ = (1−γ)ℓ + γ·mean ℓ_early"
    cost = "2 extra forwards at the first step (with / without image); |band| extra lm_head rows per step"
    preset: str = param("chair", choices=tuple(PRESETS), doc="benchmark defaults: λ 0.17 / 0.01 / 0.1, γ 0.3")
    lam: float | None = param(None, doc="steering strength λ on the code's scale; None = preset")
    gamma: float | None = param(None, doc="SLA mixing weight γ in [0, 1]; None = preset")
    sla_layers: tuple = param((), doc="SLA early-exit layers; () = 25..30 of 32, scaled by depth")
    sla_norm: bool = param(False, doc="final norm on early-exit states (code: off)")

    zero_params = {"lam": 0.0, "gamma": 0.0}

    def __post_init__(self) -> None:
        super().__post_init__()
        for pname, high in (("lam", float("inf")), ("gamma", 1.0)):
            value = getattr(self, pname)
            if value is not None:
                bound = MAX_PARAMETER if high == float("inf") else high
                check_number(f"vista: parameter '{pname}'", value, low=0, high=bound)
        object.__setattr__(self, "sla_layers", layer_indices(self.name, "sla_layers", self.sla_layers))

    @property
    def strength(self) -> tuple[float, float]:
        """(λ, γ) in effect."""
        lam, gamma = PRESETS[self.preset]
        return (lam if self.lam is None else float(self.lam)), (gamma if self.gamma is None else float(self.gamma))

    def is_identity(self) -> bool:
        return self.strength == (0.0, 0.0)

    def new_state(self) -> _State:
        return _State()

    def hooks(self, session) -> list[HookSpec]:
        lam, gamma = self.strength
        n = session.adapter.num_layers(session.model)
        band = (self.sla_layers or sla_band(n)) if gamma else ()
        if band and band[-1] >= n:
            raise HallucError(f"vista: SLA layer {band[-1]} does not exist; the model has {n} layers")
        state = session.state[self.name]
        norm = session.adapter.resolve(session.model, "norm") if self.sla_norm else None
        head = session.adapter.resolve(session.model, "lm_head")

        def start(hidden, ctx):  # layers.0 pre-hook: the two steering passes, at prefill
            if not ctx.prefill:
                return
            with aux_pass(session, self.name):
                image_forward(session)
                positive = dict(state.record)
                text_only_forward(session)
            rows = session.sample_index(session.inputs["input_ids"].shape[0])  # input row -> sample
            state.vectors = {i: positive[i] - state.record[i][rows.to(positive[i].device)] for i in positive}
            state.record.clear()

        def record(output, ctx):  # layers.i: also in the own steering passes
            if ctx.in_aux or ctx.layer in band:
                state.record[ctx.layer] = last_token(output)

        def inject(output, ctx):  # layers.i.mlp
            v = state.vectors[ctx.layer]
            return steer(output, v[ctx.input_rows(output.shape[0], v.device)], lam)

        def augment(output, ctx):  # lm_head: (B, T, V); the last position predicts the next token
            # (L, B, d); the band's layers may sit on other devices than the norm and the head
            hidden = torch.stack([state.record[i].to(output.device) for i in band]).to(output.dtype)
            if norm is not None:
                hidden = norm.forward(hidden.to(execution_device(norm)))  # forward(): no torch hooks re-entered
            early = head.forward(hidden.to(execution_device(head))).to(output.device)
            mixed = output.clone()
            mixed[:, -1] = mix_logits(output[:, -1], early, gamma)
            return mixed

        specs = []
        if lam:
            specs.append(HookSpec("layers.0", start, kind="forward_pre"))
            specs += [HookSpec(f"layers.{i}.mlp", inject) for i in range(n)]
        specs += [HookSpec(f"layers.{i}", record, aux=True) for i in (range(n) if lam else band)]
        if gamma:
            specs.append(HookSpec("lm_head", augment))
        return specs
