"""Per-`generate` state shared by the methods of one call (fresh each call: no stale state)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from halluc.models.base import ImageSpan
from halluc.models.lvlm import LVLM


@dataclass(eq=False)
class Session:
    lvlm: LVLM
    inputs: dict  # the batch as given to generate(), on the model's device
    images: list | None = None  # the PIL images of the batch (branches re-process them)
    prompts: list[str] = field(default_factory=list)
    views: tuple[str, ...] = ("original",)  # the batch is view-major: len(views) blocks of len(prompts) rows
    state: dict[str, Any] = field(default_factory=dict)  # method scratch space for this call

    @property
    def model(self):
        return self.lvlm.model

    @property
    def adapter(self):
        return self.lvlm.adapter

    @property
    def processor(self):
        return self.lvlm.processor

    @cached_property
    def image_mask(self) -> torch.Tensor:
        """(B, T) bool over the prompt."""
        return self.adapter.image_mask(self.model, self.inputs["input_ids"])

    @cached_property
    def image_spans(self) -> list[list[ImageSpan]]:
        return self.adapter.image_spans(self.model, self.inputs)
