"""Temperature / top-k / top-p sampling with its own generator: one draw per sample, global RNG untouched."""
from __future__ import annotations

import math

import torch

from halluc.engine.decoding import Decoding


class Sampler:
    """Draws one token per row of (N, V) scores with the decoding's settings and seed."""

    def __init__(self, decoding: Decoding, device: torch.device):
        self.decoding = decoding
        self.seed = decoding.seed if decoding.seed is not None else torch.seed() % 2**63
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(self.seed)

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:  # (N, V) -> (N,) token ids
        d = self.decoding
        if self.generator.device != scores.device:  # a dispatched model's logits: follow them, same seed
            self.generator = torch.Generator(device=scores.device)
            self.generator.manual_seed(self.seed)
        scores = scores / d.temperature
        if d.top_k:
            kth = scores.topk(min(d.top_k, scores.shape[-1]), dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, -math.inf)
        if d.top_p < 1.0:
            scores = top_p_filter(scores, d.top_p)
        probs = scores.softmax(-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)


def top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Scores outside the smallest prefix of the sorted distribution reaching `top_p` set to -inf."""
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    cumulative = sorted_scores.softmax(-1).cumsum(-1)
    drop = cumulative - sorted_scores.softmax(-1) >= top_p
    drop_unsorted = drop.scatter(-1, order, drop)
    return scores.masked_fill(drop_unsorted, -math.inf)
