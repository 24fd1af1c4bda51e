"""Multi-branch decoding: extra input views run as rows of the same batch, one token for all.

A decoding method declares `Branch`es (noised image, transformed image, masked image, text only, ...)
and a `combine` of per-view log-probabilities. The batch is laid out view-major:

    rows = [original B rows ; view 1 B rows ; view 2 B rows ; ...]     (then x beams inside generate)

Every row keeps its own KV cache (it is an ordinary batch row), so later tokens of a view are exactly
what that view would give alone. `BranchCombiner` writes the same combined scores into every view's
rows, so greedy, beam search and (with our own one-draw sampler) sampling pick one token per sample.
The plausibility cutoff uses the original view: tokens with log p < log(beta) + max log p are dropped.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from halluc.decoding.strategy import Decoding

ORIGINAL = "original"


@dataclass(frozen=True)
class Branch:
    """One extra view of each sample.

    image:  PIL transform applied per sample before the processor, `fn(image, row) -> image`
    pixels: transform of the processed pixel tensor of the whole view, `fn(pixel_values) -> pixel_values`
    with_image: False gives the text-only prompt (no image tokens, no pixels)
    """

    name: str
    image: Callable[[Image.Image, int], Image.Image] | None = None
    pixels: Callable[[torch.Tensor], torch.Tensor] | None = None
    with_image: bool = True


def build_view_batch(adapter, processor, images: Sequence[Image.Image], prompts: Sequence[str],
                     branches: Sequence[Branch]) -> dict:
    """Inputs of the original view and every branch, merged into one left-padded batch."""
    parts = [adapter.build_inputs(processor, images, prompts)]
    for branch in branches:
        view_images = None
        if branch.with_image:
            view_images = [branch.image(img, i) if branch.image else img for i, img in enumerate(images)]
        part = adapter.build_inputs(processor, view_images, prompts)
        if branch.pixels is not None:
            part["pixel_values"] = branch.pixels(part["pixel_values"])
        parts.append(part)
    return merge_inputs(parts, pad_token_id=processor.tokenizer.pad_token_id)


# Per-token keys are left-padded to a common length (value: pad id or 0); everything else
# (pixel tensors, grids, image sizes) is concatenated along its first dimension in row order,
# which is the order the models consume images in.
SEQUENCE_KEYS = {"input_ids": None, "attention_mask": 0, "mm_token_type_ids": 0, "token_type_ids": 0,
                 "qformer_input_ids": None, "qformer_attention_mask": 0}


def merge_inputs(parts: Sequence[dict], pad_token_id: int) -> dict:
    """Concatenate processor outputs row-wise into one left-padded batch."""
    merged = {}
    for key in dict.fromkeys(k for part in parts for k in part):
        values = [part[key] for part in parts if key in part]
        if key in SEQUENCE_KEYS:
            fill = pad_token_id if SEQUENCE_KEYS[key] is None else SEQUENCE_KEYS[key]
            merged[key] = _left_pad_cat(values, fill)
        elif isinstance(values[0], torch.Tensor):
            merged[key] = torch.cat(values, dim=0)
        else:
            merged[key] = [v for value in values for v in value]
    return merged


def _left_pad_cat(tensors: Sequence[torch.Tensor], fill: int) -> torch.Tensor:
    width = max(t.shape[-1] for t in tensors)
    padded = [torch.nn.functional.pad(t, (width - t.shape[-1], 0), value=fill) for t in tensors]
    return torch.cat(padded, dim=0)


class Sampler:
    """Temperature / top-k / top-p sampling with its own generator: one draw per sample."""

    def __init__(self, decoding: Decoding, device: torch.device):
        self.decoding = decoding
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(decoding.seed if decoding.seed is not None else torch.seed() % 2**63)

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:  # (N, V) -> (N,) token ids
        d = self.decoding
        scores = scores / d.temperature
        if d.top_k:
            kth = scores.topk(min(d.top_k, scores.shape[-1]), dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, -math.inf)
        if d.top_p < 1.0:
            scores = _top_p(scores, d.top_p)
        probs = scores.softmax(-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)


def _top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    cumulative = sorted_scores.softmax(-1).cumsum(-1)
    drop = cumulative - sorted_scores.softmax(-1) >= top_p  # keep the smallest prefix reaching top_p
    drop_unsorted = drop.scatter(-1, order, drop)
    return scores.masked_fill(drop_unsorted, -math.inf)


class BranchCombiner:
    """LogitsProcessor over a view-major batch: (views * N, V) scores -> the same combined row per view."""

    def __init__(self, views: Sequence[str], combine: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
                 beta: float | None, sampler: Sampler | None = None):
        self.views, self.combine, self.beta, self.sampler = list(views), combine, beta, sampler

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        n_views = len(self.views)
        logp = scores.float().log_softmax(-1).view(n_views, -1, scores.shape[-1])  # (R, N, V)
        by_view = dict(zip(self.views, logp))
        combined = self.combine(by_view)  # (N, V)
        if self.beta is not None and self.beta > 0:
            original = by_view[ORIGINAL]
            cutoff = original.max(-1, keepdim=True).values + math.log(self.beta)
            combined = combined.masked_fill(original < cutoff, -math.inf)
        if self.sampler is not None:  # HF runs greedy on our one-hot: every view gets this one draw
            token = self.sampler(combined)
            combined = torch.full_like(combined, -math.inf).scatter_(-1, token[:, None], 0.0)
        return combined.repeat(n_views, 1).to(scores.dtype)
