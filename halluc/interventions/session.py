"""What a method sees of one `generate` call (fresh each call: no state outlives it).

    Request   what was asked, before any input is built: the model, the PIL images, the prompts and
              the decoding settings. `Method.branches` gets this.
    Session   the Request plus the batch as it runs: inputs on the model's device (view-major when
              there are branches), its `ViewLayout`, image positions, and per-call scratch `state`.
              Every other declaration (hooks, attention edits, processors, search) gets this.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from halluc.engine.decoding import Decoding
from halluc.engine.views import ORIGINAL, ViewLayout, qualified_view
from halluc.modeling.base import ImageSpan
from halluc.modeling.lvlm import LVLM


@dataclass(frozen=True, eq=False)
class Request:
    lvlm: LVLM
    images: list  # PIL images, one per sample
    prompts: list[str]
    decoding: Decoding = field(default_factory=Decoding)

    @property
    def model(self):
        return self.lvlm.model

    @property
    def adapter(self):
        return self.lvlm.adapter

    @property
    def processor(self):
        return self.lvlm.processor

    @property
    def family(self) -> str:
        return self.lvlm.family


@dataclass(eq=False)
class Session:
    request: Request
    inputs: dict  # the batch as given to generate(), on the model's device
    layout: ViewLayout = field(default_factory=ViewLayout)
    state: dict[str, Any] = field(default_factory=dict)  # per-call scratch space, keyed by method name
    # row indices per (running rows, device): the layout is fixed for the call, and hooks ask at every step
    _rows: dict = field(default_factory=dict, repr=False)

    # ---- what was asked ----------------------------------------------------------------------
    lvlm = property(lambda self: self.request.lvlm)
    model = property(lambda self: self.request.model)
    adapter = property(lambda self: self.request.adapter)
    processor = property(lambda self: self.request.processor)
    images = property(lambda self: self.request.images)
    prompts = property(lambda self: self.request.prompts)
    decoding = property(lambda self: self.request.decoding)

    # ---- the batch -----------------------------------------------------------------------------
    @property
    def views(self) -> tuple[str, ...]:
        return self.layout.views

    def view_rows(self, owner: str, branch: str = ORIGINAL) -> slice | None:
        """Input rows of `owner`'s branch (or of the original view); None when that view is not in the batch."""
        view = branch if branch == ORIGINAL else qualified_view(owner, branch)
        return self.layout.rows(view) if view in self.layout.views else None

    def sample_index(self, running_rows: int, device=None) -> torch.Tensor:
        """(running_rows,) the sample of each row of the running batch (any view, any beam)."""
        return self.layout.sample_index(running_rows, device)

    def input_index(self, running_rows: int, device=None) -> torch.Tensor:
        """(running_rows,) the row of `inputs` each row of the running batch came from."""
        key = ("input", running_rows, str(device))
        if key not in self._rows:
            self._rows[key] = self.layout.input_index(running_rows, device)
        return self._rows[key]

    def original_rows(self, running_rows: int, device=None) -> torch.Tensor | None:
        """(running_rows,) bool: which rows of the running batch decode the original view; None when every
        row does (no branches). A method that rewrites the next-token logits (ONLY, DeCo) rewrites only
        these, so stacked contrast methods still contrast against their views' plain predictions."""
        if len(self.layout.views) == 1:
            return None
        key = ("original", running_rows, str(device))
        if key not in self._rows:
            view = self.layout.rows(ORIGINAL)
            index = self.input_index(running_rows, device)
            self._rows[key] = (index >= view.start) & (index < view.stop)
        return self._rows[key]

    @cached_property
    def image_mask(self) -> torch.Tensor:
        """(B, T) bool over the prompt."""
        return self.adapter.image_mask(self.model, self.inputs["input_ids"])

    @cached_property
    def image_spans(self) -> list[list[ImageSpan]]:
        return self.adapter.image_spans(self.model, self.inputs)
