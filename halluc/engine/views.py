"""Extra input views of each sample, decoded as rows of one batch.

A decoding method declares `Branch`es: the same sample with its image changed (noised, transformed,
masked), without its image, or with its prompt changed (another instruction, a system prompt). The
batch is laid out view-major,

    rows = [original: S rows ; view 1: S rows ; view 2: S rows ; ...]      (S samples)

and `generate` then repeats each row in place (beams). Every row keeps its own KV cache (it is an
ordinary batch row), so later tokens of a view are exactly what that view gives alone.
`ViewLayout` answers "which rows are view v" and "which sample is running row r"; nobody slices
the batch by hand.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from halluc.errors import HallucError

ORIGINAL = "original"


@dataclass(frozen=True)
class Branch:
    """One extra view of each sample.

    image:      PIL transform applied per sample before the processor, `fn(image, sample) -> image`
    pixels:     transform of the processed pixel tensor of the whole view, `fn(pixel_values) -> pixel_values`
    with_image: False gives the text-only prompt (no image tokens, no pixels)
    prompt:     new user text per sample, `fn(text, sample) -> text` (None keeps the prompt)
    system:     a system prompt for this view (None: the family's default)
    """

    name: str
    image: Callable[[Image.Image, int], Image.Image] | None = None
    pixels: Callable[[torch.Tensor], torch.Tensor] | None = None
    with_image: bool = True
    prompt: Callable[[str, int], str] | None = None
    system: str | None = None


def qualified_view(owner: str, branch: str) -> str:
    """The batch's name for method `owner`'s branch: stacked methods may use the same branch names."""
    return f"{owner}:{branch}"


@dataclass(frozen=True)
class ViewLayout:
    """Rows of a view-major batch: `len(views)` blocks of `samples` input rows; `generate` repeats each
    input row `per` times in place (beams), so running row r is input row r // per."""

    views: tuple[str, ...] = (ORIGINAL,)
    samples: int = 1

    @property
    def input_rows(self) -> int:
        return len(self.views) * self.samples

    def rows(self, view: str) -> slice:
        """The input rows of `view`."""
        if view not in self.views:
            raise KeyError(f"no view '{view}' in this batch (views: {', '.join(self.views)})")
        start = self.views.index(view) * self.samples
        return slice(start, start + self.samples)

    def per_input(self, running_rows: int) -> int:
        """How many running rows each input row became (num_beams)."""
        if running_rows % self.input_rows:
            raise HallucError(f"batch of {running_rows} rows does not expand the {self.input_rows} input rows")
        return running_rows // self.input_rows

    def input_index(self, running_rows: int, device=None) -> torch.Tensor:
        """(running_rows,) the input row of each running row."""
        return torch.arange(running_rows, device=device) // self.per_input(running_rows)

    def sample_index(self, running_rows: int, device=None) -> torch.Tensor:
        """(running_rows,) the sample (prompt) of each running row, whatever its view."""
        return self.input_index(running_rows, device) % self.samples


def view_inputs(adapter, processor, images: Sequence[Image.Image], prompts: Sequence[str], branch: Branch) -> dict:
    """The processor inputs of one branch's view of every sample."""
    texts = [branch.prompt(p, i) for i, p in enumerate(prompts)] if branch.prompt else list(prompts)
    view_images = None
    if branch.with_image:
        view_images = [branch.image(img, i) if branch.image else img for i, img in enumerate(images)]
    part = adapter.build_inputs(processor, view_images, texts, system=branch.system)
    if branch.pixels is not None:
        part["pixel_values"] = branch.pixels(part["pixel_values"])
    return part


def build_view_batch(adapter, processor, images: Sequence[Image.Image], prompts: Sequence[str],
                     branches: Sequence[Branch]) -> dict:
    """Inputs of the original view and every branch, merged into one left-padded batch."""
    original = adapter.build_inputs(processor, images, prompts)
    parts = [original]
    for branch in branches:
        if _same_prompt_and_images(branch):  # the processor would give the original's inputs again
            part = dict(original)
            if branch.pixels is not None:
                part["pixel_values"] = branch.pixels(original["pixel_values"])
            parts.append(part)
        else:
            parts.append(view_inputs(adapter, processor, images, prompts, branch))
    return merge_inputs(parts, pad_token_id=processor.tokenizer.pad_token_id)


def _same_prompt_and_images(branch: Branch) -> bool:
    return branch.with_image and branch.image is None and branch.prompt is None and branch.system is None


# Per-token keys are padded to a common length (value: pad id or 0) on the LM's left, except the
# Q-Former's prompt, which is right-padded (its absolute positions must not move); everything else
# (pixel tensors, grids, image sizes) is concatenated along its first dimension in row order,
# which is the order the models consume images in.
SEQUENCE_KEYS = {"input_ids": None, "attention_mask": 0, "mm_token_type_ids": 0, "token_type_ids": 0,
                 "qformer_input_ids": None, "qformer_attention_mask": 0}
RIGHT_PADDED = {"qformer_input_ids", "qformer_attention_mask"}


def merge_inputs(parts: Sequence[dict], pad_token_id: int) -> dict:
    """Concatenate processor outputs row-wise into one left-padded batch."""
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(k for part in parts for k in part):
        values = [part[key] for part in parts if key in part]
        if key in SEQUENCE_KEYS:
            own_fill = SEQUENCE_KEYS[key]
            fill = pad_token_id if own_fill is None else own_fill
            merged[key] = _pad_cat(values, fill, right=key in RIGHT_PADDED)
        elif isinstance(values[0], torch.Tensor):
            merged[key] = torch.cat(_zero_padded(values), dim=0)
        else:
            merged[key] = [v for value in values for v in value]
    return merged


def _zero_padded(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Image tensors of views whose images split into different numbers of crops or sub-images
    ((N, slots, ...) pixels, Idefics3's (N, slots, H, W) pixel mask), zero-padded at the end to one shape:
    the padding the processor itself gives a batch (all-zero slots, which the models skip)."""
    shape = [max(sizes) for sizes in zip(*(t.shape[1:] for t in tensors))]
    if all(list(t.shape[1:]) == shape for t in tensors) or len({t.dim() for t in tensors}) != 1:
        return list(tensors)
    return [torch.nn.functional.pad(t, [p for size, have in zip(reversed(shape), reversed(t.shape[1:]))
                                        for p in (0, size - have)]) for t in tensors]


def _pad_cat(tensors: Sequence[torch.Tensor], fill: int, right: bool = False) -> torch.Tensor:
    width = max(t.shape[-1] for t in tensors)
    side = (lambda n: (0, n)) if right else (lambda n: (n, 0))
    padded = [torch.nn.functional.pad(t, side(width - t.shape[-1]), value=fill) for t in tensors]
    return torch.cat(padded, dim=0)
