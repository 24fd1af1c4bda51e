"""A loaded vision-language model: the HF model, its processor and its family adapter."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from halluc.modeling.base import Adapter


@dataclass(eq=False)
class LVLM:
    """What `halluc.load` returns and every API call takes.

    `active` is the stack of methods entered with `halluc.apply`; `generate` applies them
    together with its own `method=` argument.
    """

    model: nn.Module
    processor: Any
    adapter: Adapter
    name: str
    revision: str | None = None
    active: list = field(default_factory=list)

    @property
    def family(self) -> str:
        return self.adapter.family

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def __repr__(self) -> str:
        return f"LVLM({self.name!r}, family={self.family!r}, device={self.device}, dtype={self.dtype})"
