"""Statistics of attention rows within disjoint column regions (e.g. ONLY's text and image tokens).

A `Regions` is built once per generate call over every key the call can reach and sliced to the
keys of each step (`upto`), so a decode step pays no mask conversion, no count and no `torch.cat`.
The per-region sums are masked sums (a product with the 0/1 membership, then a sum), not matrix
products: a batched matmul may accumulate two heads' identical rows differently, and ONLY's head
selection compares heads (ties with the mean are kept), so every head must be summed the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

TINY = torch.finfo(torch.float32).tiny


@dataclass(frozen=True, eq=False)
class Regions:
    """R disjoint column regions of B rows over Tk keys.

    inside  (B, R, Tk) fp32 membership (1 / 0); columns in no region are 0 in every row of it
    index   (B, 1, Tk) long: each column's region (0 for a column in none; `member` tells them apart)
    member  (B, 1, Tk) bool: the column is in some region
    counts  (B, 1, R, Tk) fp32: members of each region among the first j + 1 columns (its last: Tk's)
    """

    inside: torch.Tensor
    index: torch.Tensor
    member: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def of(cls, regions: torch.Tensor) -> Regions:
        """From (B, R, Tk) bool masks (disjoint)."""
        inside = regions.float()
        return cls(inside, regions.long().argmax(1, keepdim=True), regions.any(1, keepdim=True),
                   inside.cumsum(-1)[:, None])

    def upto(self, tk: int) -> Regions:
        """The first `tk` columns (views, no copy)."""
        return Regions(self.inside[..., :tk], self.index[..., :tk], self.member[..., :tk], self.counts[..., :tk])

    def rows(self, per: int) -> Regions:
        """Each row repeated `per` times in place (generate's beams)."""
        return Regions(*(t.repeat_interleave(per, 0) for t in (self.inside, self.index, self.member, self.counts)))

    def sums(self, row: torch.Tensor) -> torch.Tensor:
        """(B, H, Tk) -> (B, H, R) the row's sum within each region."""
        return (row[:, :, None] * self.inside[:, None]).sum(-1)

    def outliers(self, row: torch.Tensor) -> torch.Tensor:
        """(B, H, Tk) -> (B, H, Tk) bool: entries above their region's mean + (unbiased) standard deviation,
        per head (none in a region of fewer than two columns, whose deviation is NaN)."""
        count = self.counts[..., -1]  # (B, 1, R)
        mean = self.sums(row) / count  # (B, H, R); NaN for an empty region, which has no column to spread to
        spread = mean.nan_to_num(0.0) @ self.inside  # (B, H, Tk) each column's region mean (0 in none)
        std = self.sums((row - spread).square_()).div_(count - 1).sqrt_()  # (B, H, R)
        threshold = (mean + std).gather(-1, self.index.expand_as(row))  # (B, H, Tk)
        return (row > threshold).logical_and_(self.member)

    def entropy(self, row: torch.Tensor) -> torch.Tensor:
        """(B, H, Tk) -> (B, H, R): entropy of each head's row renormalised within each region,
        −Σ p·log(p + 1e−6) (NaN when the region holds no mass)."""
        mass = self.sums(row)  # (B, H, R)
        # each column over its region's mass (a massless region's columns are 0: 0 / tiny = 0, no NaN to spread)
        p = row / mass.clamp_min(TINY).gather(-1, self.index.expand_as(row))  # (B, H, Tk)
        entropy = self.sums(p * (p + 1e-6).log_()).neg_()
        return entropy.masked_fill_(mass == 0, float("nan"))


def text_region(image: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T) bool over the prompt: real non-image tokens except each row's first (the attention sink)."""
    real = attention_mask.bool() if attention_mask is not None else torch.ones_like(image)
    text = real & ~image
    first = text.long().argmax(-1)  # the first real text token of each row (BOS)
    return text.scatter(-1, first[:, None], False)


def extend_regions(prompt: torch.Tensor, length: int) -> torch.Tensor:
    """(B, 2, T) text / image regions over the prompt -> (B, 2, length): the keys after it are text."""
    after = torch.tensor([[True], [False]], device=prompt.device).expand(prompt.shape[0], 2, length - prompt.shape[-1])
    return torch.cat([prompt, after], -1)


def region_outliers(row: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """row (B, H, Tk), regions (B, R, Tk) bool -> (B, H, Tk) bool (`Regions.outliers`)."""
    return Regions.of(regions).outliers(row)


def region_entropy(row: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """row (B, H, Tk), regions (B, R, Tk) bool -> (B, H, R) (`Regions.entropy`)."""
    return Regions.of(regions).entropy(row)
