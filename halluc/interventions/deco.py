"""DeCo (Wang et al., ICLR 2025, arXiv 2410.11779): dynamic correction decoding.

    C = smallest top-probability prefix of p_N with mass ≥ τ (at most K tokens)
    (l*, c*) = argmax_{l ∈ E, c ∈ C} p_l(c),  w = p_{l*}(c*)
    ℓ' = ℓ_N + α·w·ℓ_{l*} on C, −inf elsewhere

ℓ_N are the final next-token logits, ℓ_l = lm_head(norm(h_l)) the early exit of decoder layer l (its
output at the last position), p = softmax. The preceding layer that gives a candidate the highest
probability anchors the correction, weighted by that probability.
Hook points: `layers.{l}` for l in E (forward: the last position's state), `lm_head` (forward:
rewrites the last position's logits, so greedy takes their argmax, sampling runs transformers'
processors and warpers on them and beam search their log-softmax, as in the official code).
Cost: |E| early exits of one row per sample and step (one batched lm_head call); no extra pass or row.
Families: every family.

Paper / code discrepancies and our choices (spec Part B §1):
  - E: the code's early-exit layers are hidden_states 20..28 of LLaVA-1.5-7B (decoder layers 19..27,
    0-based); other depths get floor(19n/32)..floor(27n/32), below the last layer (InstructBLIP's
    author-given 15..24 is `layers=[14, ..., 23]`; Qwen-VL / MiniGPT-4 values were not released).
  - α = 0.6 (every launch script and the README; the notebook uses 0.5); τ = 0.9, K = 20.
  - the code implements greedy, sampling and beam search, but routes beam *sampling* (num_beams > 1
    with do_sample) to plain decoding; ours corrects greedy, sampling and beam search alike (beam
    sampling is not a halluc mode). Its greedy returns the uncalibrated scores; ours returns the
    calibrated ones (`return_scores`).
  - early exits in fp32 (the code keeps fp16 early logits and adds them to fp32 final logits), on the
    last position only (the code projects every prompt position at every early layer).
  - batch: per row (the code is batch-1 for greedy and sampling).
  - stacked with a contrast method, only the original view's logits are corrected; the contrast views
    keep their plain prediction (the −inf outside C would otherwise meet −inf in the contrast).
  - α = 0 still restricts the next token to C; `candidate_p=1, candidate_k=0` (every token) with α = 0
    is the identity.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from halluc.engine.early_exit import LogitLens, last_position
from halluc.engine.steps import check_layers, depth_band, layer_indices, replace_last
from halluc.interventions.base import Method, param
from halluc.interventions.hooks import HookSpec
from halluc.interventions.registry import register


def candidates(final: torch.Tensor, mass: float, most: int) -> tuple[torch.Tensor, torch.Tensor]:
    """final (N, V) logits -> (ids (N, K), in_set (N, K) bool): the top-K tokens, and which of them form the
    smallest prefix whose probability reaches `mass` (the code's searchsorted(cumsum, τ) + 1, at most K)."""
    probs = final.float().softmax(-1)
    top, ids = probs.topk(min(most, probs.shape[-1]) if most else probs.shape[-1], dim=-1)
    below = (top.cumsum(-1) < mass).sum(-1, keepdim=True)  # (N, 1) the set's size − 1
    return ids, torch.arange(ids.shape[-1], device=ids.device) <= below


def calibrate(final: torch.Tensor, early: torch.Tensor, alpha: float, mass: float, most: int) -> torch.Tensor:
    """final (N, V), early (L, N, V) early-exit logits -> (N, V) ℓ_N + α·w·ℓ_{l*} on the candidates, −inf off.

    The anchor is the first maximum over (layer, candidate) in layer order, then candidate rank (the code's
    argmax over the flattened layer x candidate matrix)."""
    ids, in_set = candidates(final, mass, most)  # (N, K)
    layers, rows, k = early.shape[0], final.shape[0], ids.shape[-1]
    seen = early.float().softmax(-1).gather(-1, ids.expand(layers, -1, -1))  # (L, N, K) p_l(c)
    out = ~in_set  # (N, K) top-K tokens outside the set
    seen = seen.masked_fill(out, -1.0).transpose(0, 1).reshape(rows, layers * k)  # (N, L*K)
    weight, best = seen.max(-1)  # first maximum: lowest layer, then highest-ranked candidate
    anchor = early[best // k, torch.arange(rows, device=final.device)].float()  # (N, V) ℓ_{l*}
    drop = torch.ones_like(final, dtype=torch.bool).scatter_(-1, ids, out)  # (N, V) every token but the set
    return (final.float() + alpha * weight[:, None] * anchor).masked_fill(drop, float("-inf"))


@register
@dataclass(frozen=True)
class DeCo(Method):
    """Dynamic correction decoding.

    Args:
        alpha: weight of the anchor layer's logits (scripts: 0.6).
        candidate_p: τ, the probability mass of the candidate set (0.9; 1 with candidate_k 0 = every token).
        candidate_k: K, the most candidates (20; 0 = no cap).
        layers: early-exit decoder layers E; () = 19..27 of 32 (hidden_states 20..28), scaled by depth.
    """

    name = "deco"
    kind = "decoding"
    paper = "Wang et al., ICLR 2025 (arXiv 2410.11779)"
    formula = "ℓ' = ℓ_N + α·w·ℓ_{l*} on the top-p candidates, l* = the early layer most sure of one, w its prob"
    cost = "|E| early exits of the last position per step (one lm_head call); no extra pass"

    alpha: float = param(0.6, low=0.0, doc="weight of the anchor layer's logits (scripts 0.6, notebook 0.5)")
    candidate_p: float = param(0.9, low=0.0, high=1.0, open_low=True, doc="τ: mass of the candidate set")
    candidate_k: int = param(20, low=0, doc="K: the most candidates (0 = no cap)")
    layers: tuple = param((), doc="early-exit layers E; () = 19..27 of 32 scaled by depth")

    zero_params = {"alpha": 0.0, "candidate_p": 1.0, "candidate_k": 0}

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layers", layer_indices(self.name, "layers", self.layers))

    def is_identity(self) -> bool:
        return self.alpha == 0 and self.candidate_p == 1.0 and self.candidate_k == 0

    def early_layers(self, num_layers: int) -> tuple[int, ...]:
        return check_layers(self.name, self.layers or depth_band(19, 27, num_layers, highest=num_layers - 2),
                            num_layers)

    def hooks(self, session) -> list[HookSpec]:
        if self.is_identity():
            return []
        band = self.early_layers(session.adapter.num_layers(session.model))
        lens = LogitLens.of(session.adapter, session.model)
        exits: dict[int, torch.Tensor] = {}  # layer -> (B, d) last-position state of the running forward

        def record(output, ctx):  # layers.i
            exits[ctx.layer] = last_position(output)

        def correct(output, ctx):  # lm_head: (B, T, V); the last position predicts the next token
            states = torch.stack([exits[i] for i in band]) if len(band) > 1 else exits[band[0]][None]  # (L, B, d)
            early = lens(states)  # (L, B, V): one lm_head call
            final = output[:, -1]
            calibrated = calibrate(final, early, self.alpha, self.candidate_p, self.candidate_k)
            return replace_last(output, calibrated, ctx.original_rows(final.shape[0], final.device))

        return [*(HookSpec(f"layers.{i}", record) for i in band), HookSpec("lm_head", correct)]
