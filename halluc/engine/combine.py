"""Combining the views' next-token distributions into one, for every view's rows.

Each decoding method contributes a `Combination`: a function of its own views' log-probabilities
(its branches plus the original) with an explicit plausibility cutoff. Combinations stack by
summing what each adds to the original view:

    ℓ = c_1(views) + Σ_{m ≥ 2} (c_m(views) − ℓ_original)

(one combination alone is used as it is), so VCD then RITUAL is
(1+α_vcd)·ℓ(v) − α_vcd·ℓ(v_noised) + α·ℓ(T(v)). Every cutoff is applied: tokens with
log p_original < log β + max log p_original are dropped for the largest β (the masks are nested).

`BranchCombiner` is the logits processor: it writes the same combined row into every view's rows,
so greedy and beam search pick one token per sample; with a `Sampler` it draws that token itself
(one draw per sample) and hands HF a one-hot. A `stepped` combination also gets the decode step (0 at
the first generated token, counted from the sequence length the combiner first sees), for a weight
that changes over time (M3ID).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from halluc.engine.sampler import Sampler
from halluc.engine.views import ORIGINAL


@dataclass(frozen=True)
class Combination:
    """One method's per-step combination.

    views:   {name the method uses: view name in the batch}; ORIGINAL is always available
    combine: {name: (N, V) log-probs} -> (N, V); `combine(views, step)` when `stepped`
    cutoff:  plausibility β on the original view (None or 0: no cutoff)
    stepped: True when `combine` also takes the decode step (0 at the first generated token)
    """

    owner: str
    views: Mapping[str, str]
    combine: Callable[..., torch.Tensor]
    cutoff: float | None = None
    stepped: bool = False


def contrast(original: torch.Tensor, other: torch.Tensor, alpha: float) -> torch.Tensor:
    """The contrastive-decoding form (1+α)·ℓ_original − α·ℓ_other that VCD, SID, ICD and AvisC share: (N, V)."""
    return (1 + alpha) * original - alpha * other


def combine_views(by_view: Mapping[str, torch.Tensor], combinations: Sequence[Combination],
                  step: int | None = None) -> torch.Tensor:
    """(N, V) stacked combination of per-view log-probs (see the module docstring)."""
    return apply_cutoffs(combine_before_cutoff(by_view, combinations, step), by_view[ORIGINAL], combinations)


def combine_before_cutoff(by_view: Mapping[str, torch.Tensor], combinations: Sequence[Combination],
                          step: int | None = None) -> torch.Tensor:
    """(N, V) stacked combination of per-view log-probs, no plausibility cutoff yet; `step` is the decode
    step that `stepped` combinations need."""
    original = by_view[ORIGINAL]
    combined = None
    for c in combinations:
        local = {ORIGINAL: original, **{name: by_view[view] for name, view in c.views.items()}}
        if c.stepped and step is None:
            raise ValueError(f"the combination of '{c.owner}' needs the decode step")
        result = c.combine(local, step) if c.stepped else c.combine(local)
        combined = result if combined is None else combined + (result - original)
    if combined is None:
        raise ValueError("combine_before_cutoff needs at least one combination")
    return combined


def apply_cutoffs(combined: torch.Tensor, original: torch.Tensor, combinations: Sequence[Combination]) -> torch.Tensor:
    """Tokens below the largest β's plausibility threshold on the original view set to −inf."""
    betas = [c.cutoff for c in combinations if c.cutoff]
    if betas:
        cutoff = original.max(-1, keepdim=True).values + math.log(max(betas))
        combined = combined.masked_fill(original < cutoff, -math.inf)
    return combined


class BranchCombiner:
    """LogitsProcessor over a view-major batch: (views * N, V) scores -> the same combined row per view."""

    def __init__(self, views: Sequence[str], combinations: Sequence[Combination], sampler: Sampler | None = None,
                 recorder=None):
        self.views, self.combinations, self.sampler = list(views), list(combinations), sampler
        self.recorder = recorder  # an EvidenceRecorder: sees the combination before and after the cutoff
        self.prompt_length: int | None = None  # the sequence length at the first step (one combiner per call)

    def __call__(self, input_ids: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
        n_views = len(self.views)
        logp = scores.float().log_softmax(-1).view(n_views, -1, scores.shape[-1])  # (R, N, V)
        by_view = dict(zip(self.views, logp))
        before = combine_before_cutoff(by_view, self.combinations, self.step(input_ids))  # (N, V)
        combined = apply_cutoffs(before, by_view[ORIGINAL], self.combinations)
        if self.recorder is not None:
            self.recorder.record(before, combined)
        if self.sampler is not None:  # HF runs greedy on our one-hot: every view gets this one draw
            token = self.sampler(combined)
            combined = torch.full_like(combined, -math.inf).scatter_(-1, token[:, None], 0.0)
        return combined.repeat(n_views, 1).to(scores.dtype)

    def step(self, input_ids: torch.Tensor | None) -> int | None:
        """Tokens generated before this step: the growth of the sequence since the first call (None when
        the caller gives no sequences)."""
        if input_ids is None:
            return None
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[-1]
        return input_ids.shape[-1] - self.prompt_length
