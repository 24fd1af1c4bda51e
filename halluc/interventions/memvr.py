"""MemVR (Zou et al., ICML 2025, arXiv 2410.03577): memory-space visual retracing.

    trigger after layer l:  H_l = entropy(softmax(top10(lm_head(norm(h_l[t]))))) / ln 10 > τ   (first such l)
    then layer l+1's FFN:   f' = (1 − α)·f + α·(mean|f| / mean|a|)·a,   a = (x·Vᵀ)·V

V (N_v × d) are the row's visual tokens as the LM receives them (LLaVA: the projector's output, read
at the prefill as the image positions of decoder layer 0's input), x the FFN input. Every forward
(the prefill and each decode step) checks layers l in the band in order and fires at most once per
row; the injection covers every position of that forward (so at the prefill the prompt's cached
keys and values change from layer l+2 on). Only the last position goes through the logit lens.
Hook points: `layers.0` (forward pre: keeps V at the prefill, resets the trigger every forward),
`layers.{l}` for l in the band (forward: early exit and trigger), `layers.{l+1}.mlp` (forward: the
injection). Cost: per step at most |band| early exits of one row per sample (lm_head on the last
position), one (x·Vᵀ)·V on the trigger's next layer (as x·(Vᵀ·V) when d < 2·N_v, with the d x d Vᵀ·V
kept per sample from the prefill); no extra pass or row.
Families: every family (V is whatever the LM reads at the image positions).

Paper / code discrepancies and our choices (spec Part A §3):
  - the LLaVA code's FFN memory is linear, (x·Vᵀ)·V with no activation over the keys, rescaled to
    the FFN output's mean magnitude (the paper's "key-value memory"); the Qwen / GLM variants apply a
    SiLU. Ours is the LLaVA code's for every family. The code's scales c1 = mean|W_up|/mean|V| and
    c2 = mean|W_down|/mean|V| cancel in the rescaling and are left out.
  - band: the code checks 5 < l < 16 (layers 6..15 of LLaVA-1.5's 32, injecting into 7..16); other
    depths get floor(6n/32)..floor(15n/32), capped so that l + 1 exists (the 3-layer toy-llava: 0..1).
    The Qwen-VL-Chat scripts use 9 < l < 16 with α = 0.28 (`layers=[10, ..., 15], alpha=0.28`).
  - α = 0.12: LLaVA's POPE / MME / MM-Vet value (its CHAIR script says 0.31 but the loader hard-codes
    0.12; LLaVA-Bench 0.32); the README's "percentage of visual tokens" reading is the mixing weight.
  - per row (the code is batch-1: its entropy sums over the batch, its means run over the whole call);
    means over the row's real positions (padding excluded), so a batch equals each sample alone.
  - V per row from its own image (the code keeps the last image's features); a row without image
    tokens (a text-only view) never injects. (x·Vᵀ)·V in fp32.
  - greedy everywhere in the scripts; sampling and beam search work the same way here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from halluc.engine.early_exit import LogitLens, last_position, top_entropy
from halluc.engine.steps import check_layers, depth_band, layer_indices
from halluc.errors import HallucError
from halluc.interventions.base import Method, param
from halluc.interventions.hooks import HookSpec
from halluc.interventions.registry import register


def retrace(f: torch.Tensor, x: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor | None,
            alpha: float, gram: torch.Tensor | None = None) -> torch.Tensor:
    """FFN output f and input x (N, T, d), memory V (N, M, d) (zero rows = none), valid (N, T) bool or
    None (all) -> (1 − α)·f + α·(mean|f| / mean|a|)·a with a = (x·Vᵀ)·V, means per row over its valid
    positions. With `gram` = Vᵀ·V (N, d, d), a = x·(Vᵀ·V): the same product, fewer multiply-adds when d < 2M."""
    a = x.float() @ gram if gram is not None else (x.float() @ memory.transpose(-1, -2)) @ memory  # (N, T, d) fp32
    f32 = f.float()
    if valid is None:
        ratio = f32.abs().sum((1, 2)) / a.abs().sum((1, 2))  # (N,) mean|f| / mean|a|
    else:
        weight = valid[..., None].float()
        ratio = (f32.abs() * weight).sum((1, 2)) / (a.abs() * weight).sum((1, 2))
    mixed = (1 - alpha) * f32 + alpha * ratio[:, None, None] * a
    kept = ratio.isfinite()  # (N,) a zero memory retraces nothing (the code would give NaN): f unchanged
    return torch.where(kept[:, None, None], mixed, f32).to(f.dtype)


@dataclass
class _State:
    memory: torch.Tensor | None = None  # (B_in, M, d) fp32 visual tokens per input row, zero-padded
    gram: torch.Tensor | None = None  # (B_in, d, d) Vᵀ·V when that is the cheaper way to retrace (d < 2M)
    has_image: torch.Tensor | None = None  # (B_in,) bool
    prompt_valid: torch.Tensor | None = None  # (B_in, T) bool: the prompt's non-padding positions
    prefill: bool = False  # whether the running forward is the prefill
    # running rows -> their memory (B, M, d), gram (B, d, d) or None and has_image (B,): fixed for the call
    per_rows: dict[int, tuple] = field(default_factory=dict)
    pending: torch.Tensor | None = None  # (B,) bool: rows with an image whose trigger has not fired in this forward
    armed: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B,) rows to inject there

    def keep_memory(self, hidden: torch.Tensor, image: torch.Tensor, per: int, mask: torch.Tensor | None) -> None:
        """The prompt's visual tokens per input row, from the prefill's input embeddings `hidden` (B, T, d);
        `image` (B_in, T) marks them, each input row runs `per` times in place (beams)."""
        rows = [hidden[i * per][image[i]].float() for i in range(image.shape[0])]  # (M_i, d) each
        self.memory = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (B_in, M, d)
        cheaper = self.memory.shape[-1] < 2 * self.memory.shape[1]  # d·d < 2·M·d multiply-adds per position
        self.gram = self.memory.mT @ self.memory if cheaper else None
        self.has_image = image.any(-1)
        self.prompt_valid = mask.bool() if mask is not None else torch.ones_like(image)
        self.per_rows.clear()

    def running(self, index: torch.Tensor) -> tuple:
        """(memory, gram, has_image) of the running rows, whose input rows are `index`; once per row count."""
        rows = index.shape[0]
        if rows not in self.per_rows:
            self.per_rows[rows] = tuple(None if t is None else t[index] for t in (self.memory, self.gram,
                                                                                  self.has_image))
        return self.per_rows[rows]


@register
@dataclass(frozen=True)
class MemVR(Method):
    """Memory-space visual retracing.

    Args:
        alpha: mixing weight α of the retraced visual memory (LLaVA scripts: 0.12; 0 = off).
        threshold: τ on the normalised top-10 entropy of an early exit (0.75).
        layers: layers whose early exit is checked; () = 6..15 of 32 scaled by depth.
    """

    name = "memvr"
    paper = "Zou et al., ICML 2025 (arXiv 2410.03577)"
    formula = "first l with H_top10(exit_l) > τ: FFN_{l+1} ← (1−α)·f + α·(|f|/|a|)·(x·Vᵀ)·V"
    cost = "≤ |band| early exits of the last position per step, one (x·Vᵀ)·V after the trigger; no extra pass"

    alpha: float = param(0.12, low=0.0, high=1.0, doc="mixing weight of the retraced visual memory (0 = off)")
    threshold: float = param(0.75, low=0.0, high=1.0, doc="τ on the normalised top-10 entropy of the early exit")
    layers: tuple = param((), doc="early-exit layers checked; () = 6..15 of 32 scaled by depth")

    zero_params = {"alpha": 0.0}

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layers", layer_indices(self.name, "layers", self.layers))

    def is_identity(self) -> bool:
        return self.alpha == 0

    def band(self, num_layers: int) -> tuple[int, ...]:
        band = check_layers(self.name, self.layers or depth_band(6, 15, num_layers, highest=num_layers - 2),
                            num_layers)
        if band[-1] == num_layers - 1:
            raise HallucError(f"memvr: layer {band[-1]} is the last one; the injection needs a next layer")
        return band

    def new_state(self) -> _State:
        return _State()

    def hooks(self, session) -> list[HookSpec]:
        if self.is_identity():
            return []
        band = self.band(session.adapter.num_layers(session.model))
        lens = LogitLens.of(session.adapter, session.model)
        image = session.image_mask  # (B_in, T)
        state = session.state[self.name]

        def start(hidden, ctx):  # layers.0, before every forward; hidden (B, T, d): the LM's input embeddings
            state.prefill = ctx.prefill
            if state.prefill:
                state.keep_memory(hidden, image, session.layout.per_input(hidden.shape[0]),
                                  session.inputs.get("attention_mask"))
            state.pending = state.running(ctx.input_rows(hidden.shape[0], hidden.device))[2].clone()
            state.armed.clear()

        def check(output, ctx):  # layers.i
            if not state.pending.any():  # once per forward and row
                return
            fire = (top_entropy(lens(last_position(output))) > self.threshold) & state.pending  # (B,)
            if fire.any():
                state.pending ^= fire  # fire ⊆ pending
                state.armed[ctx.layer + 1] = fire

        def inject(output, ctx):  # layers.i.mlp
            fire = state.armed.pop(ctx.layer, None)
            if fire is None:
                return None
            x = ctx.input  # (B, T, d) the FFN input
            memory, gram, _ = state.running(ctx.input_rows(x.shape[0], x.device))
            valid = state.prompt_valid.to(x.device)[ctx.input_rows(x.shape[0], x.device)] if state.prefill \
                else None  # padding stays out of the means
            if fire.all():
                return retrace(output, x, memory, valid, self.alpha, gram)
            chosen = fire.nonzero().flatten()
            mixed = output.clone()
            mixed[chosen] = retrace(output[chosen], x[chosen], memory[chosen], None if valid is None else valid[chosen],
                                    self.alpha, None if gram is None else gram[chosen])
            return mixed

        specs = [HookSpec("layers.0", start, kind="forward_pre")]
        specs += [HookSpec(f"layers.{i}", check) for i in band]
        specs += [HookSpec(f"layers.{i + 1}.mlp", inject) for i in band]
        return specs
