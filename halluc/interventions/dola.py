"""DoLa (Chuang et al., ICLR 2024, arXiv 2309.03883): decoding by contrasting layers.

    j* = argmax_{j ∈ E} ½[KL(M_j‖q_N) + KL(M_j‖q_j)] / |V|,  M_j = ½(q_N + q_j),  q_l = softmax(z_l)
    s = log_softmax(z_N) − log_softmax(z_{j*}) on tokens with p_N ≥ r·max p_N, −inf elsewhere

z_N are the final next-token logits, z_l = lm_head(h_l) the early exit of hidden state l (h_0 the input
embeddings, image features in place; h_l the output of decoder layer l−1), with no final norm. The
candidate layer whose next-token distribution differs most from the last layer's is its "premature"
layer, and its log-probabilities are subtracted.
Hook points: `layers.0` (forward pre: h_0 at the last position) when 0 ∈ E, `layers.{l−1}` (forward: h_l
at the last position) for the other l ∈ E, `lm_head` (forward: s replaces the last position's logits, so
greedy takes its argmax, sampling runs transformers' processors and warpers on it and beam search its
log-softmax).
Cost: |E| early exits of one row per sample and step (one lm_head call); no extra pass or row.
Families: every family.

Paper / code discrepancies and our choices (spec §2):
  - early exits: the paper reads them "through the LM head"; the official fork, HALC's fork and the HF
    port apply lm_head to the raw residual stream, without the final norm. `norm=False` (default) follows
    the code; `norm=True` is the paper's reading (halluc's normalising logit lens).
  - the divergence the code calls JSD is ½[KL(M‖q_N) + KL(M‖q_j)] (`F.kl_div(log q, M)` is KL(M‖q)),
    averaged over the vocabulary, not the Jensen-Shannon divergence; we compute that form. The code
    averages it over the batch before the argmax (batch 1 in effect); ours chooses j* per row.
  - E: HALC's LVLM runs use hidden states 0, 2, ..., 30 against 32 (LLaVA-1.5-7B): `layers=()` is the even
    indices 0..N−2 of any depth N; on a model with tied embeddings 0 is left out (the HF port starts at
    2 there: lm_head(h_0) would rank the input token first) unless nothing else remains. The text-LM
    scripts' bands ("0,2,...,14" or "16,...,30") are `layers=[...]`. One layer = static DoLa (no choice).
  - relative top r = 0.1; dropped tokens get −inf, the base −1e3 there (the HF port's −1e-3 is a typo
    with the same result). r = 0: the raw difference z_N − z_{j*}, as the code.
  - the text-LM scripts add a repetition penalty of 1.2; HALC's LVLM runs do not, and halluc has none.
  - beam search: the HF port refuses it; HALC's `dola_beam_search` subtracts raw logits with the
    relative top commented out and picks j* from the mean over beams. Ours applies the greedy rule to
    each beam row, then transformers' log-softmax (as every logit-level method here).
  - early exits and the contrast in fp32 (the code: the model's dtype).
  - stacked with a contrast method, only the original view's logits are rewritten; contrast views keep
    their plain prediction (the −inf outside the relative top would otherwise meet −inf in the contrast).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from halluc.engine.early_exit import LogitLens, last_position
from halluc.engine.steps import check_layers, layer_indices, replace_last
from halluc.interventions.base import Method, param
from halluc.interventions.hooks import HookSpec
from halluc.interventions.registry import register

BASE_FILTER = -1e3  # the code's base value on tokens outside the relative top


def divergence(final: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
    """final (N, V), early (L, N, V) logits -> (L, N) ½[KL(M‖q_N) + KL(M‖q_l)] averaged over the vocabulary."""
    final, early = final.float(), early.float()
    mean = 0.5 * (final.softmax(-1)[None] + early.softmax(-1))  # (L, N, V) M
    kl_final = F.kl_div(final.log_softmax(-1)[None].expand_as(mean), mean, reduction="none").mean(-1)
    kl_early = F.kl_div(early.log_softmax(-1), mean, reduction="none").mean(-1)
    return 0.5 * (kl_final + kl_early)


def contrast(final: torch.Tensor, base: torch.Tensor, relative_top: float) -> torch.Tensor:
    """final, base (N, V) logits -> (N, V) s: log p_N − log p_base inside the relative top, −inf outside."""
    final, base = final.float(), base.float()
    if relative_top <= 0:
        return final - base
    mature = final.log_softmax(-1)
    dropped = mature < mature.amax(-1, keepdim=True) + math.log(relative_top)  # the max itself always stays
    return mature.masked_fill(dropped, -math.inf) - base.log_softmax(-1).masked_fill(dropped, BASE_FILTER)


def dola_logits(final: torch.Tensor, early: torch.Tensor, relative_top: float) -> torch.Tensor:
    """final (N, V), early (L, N, V) candidate exits -> (N, V) s against each row's most divergent layer
    (the first of equals)."""
    chosen = divergence(final, early).argmax(0)  # (N,)
    base = early[chosen, torch.arange(final.shape[0], device=final.device)]  # (N, V)
    return contrast(final, base, relative_top)


def tied_embeddings(model) -> bool:
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    return out is not None and inp is not None and out.weight.data_ptr() == inp.weight.data_ptr()


@register
@dataclass(frozen=True)
class DoLa(Method):
    """Decoding by contrasting layers.

    Args:
        layers: candidate premature layers E as hidden-state indices (0 = the input embeddings, l = the
            output of decoder layer l−1), all below the last; () = 0, 2, ..., N−2 (HALC's LVLM runs).
        relative_top: r, the relative-top cutoff on the final layer (0.1; 0 = none, the raw difference).
        norm: the final norm on the early exits (the code: no; True = the paper's reading).
    """

    name = "dola"
    kind = "decoding"
    paper = "Chuang et al., ICLR 2024 (arXiv 2309.03883)"
    formula = "s = log p_N − log p_{j*} on the relative top, j* = the early exit most divergent from p_N"
    cost = "|E| early exits of the last position per step (one lm_head call); no extra pass"

    layers: tuple = param((), doc="premature candidates (hidden-state indices); () = 0, 2, ..., N−2")
    relative_top: float = param(0.1, low=0.0, high=1.0, doc="r: keep tokens with p ≥ r·max p (0 = no cutoff)")
    norm: bool = param(False, doc="final norm on the early exits (code: off; paper's reading: on)")

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layers", layer_indices(self.name, "layers", self.layers))

    def candidate_layers(self, num_layers: int, tied: bool) -> tuple[int, ...]:
        if self.layers:
            return check_layers(self.name, self.layers, num_layers)
        even = tuple(range(0, num_layers, 2))
        return even[1:] if tied and len(even) > 1 else even

    def hooks(self, session) -> list[HookSpec]:
        model = session.model
        band = self.candidate_layers(session.adapter.num_layers(model), tied_embeddings(model))
        lens = LogitLens.of(session.adapter, model, normed=self.norm)
        exits: dict[int, torch.Tensor] = {}  # hidden-state index -> (B, d) last position, this forward

        def embeddings(hidden, ctx):  # layers.0, before it runs: h_0
            exits[0] = hidden[:, -1]

        def record(output, ctx):  # layers.{l-1}: h_l
            exits[ctx.layer + 1] = last_position(output)

        def contrast_layers(output, ctx):  # lm_head: (B, T, V); the last position predicts the next token
            early = lens(torch.stack([exits[i] for i in band]))  # (L, B, V): one lm_head call
            final = output[:, -1]
            s = dola_logits(final, early, self.relative_top)
            return replace_last(output, s, ctx.original_rows(final.shape[0], final.device))

        specs = [HookSpec(f"layers.{i - 1}", record) for i in band if i > 0]
        if band[0] == 0:
            specs.append(HookSpec("layers.0", embeddings, kind="forward_pre"))
        return [*specs, HookSpec("lm_head", contrast_layers)]
