"""A loaded vision-language model: the HF model, its processor and its family adapter."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from halluc.modeling.base import Adapter, HFModel


@dataclass(eq=False)
class LVLM:
    """What `halluc.load` returns and every API call takes.

    `active` is the stack of methods entered with `halluc.apply`; `generate` applies them
    together with its own `method=` argument.
    """

    model: HFModel
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
        """Where inputs go: the token embedding's device (a dispatched model's first parameter may sit elsewhere)."""
        return execution_device(self.model.get_input_embeddings())

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the embeddings (what floating inputs, e.g. pixels, are cast to)."""
        return self.model.get_input_embeddings().weight.dtype

    def inputs_for_model(self, inputs: dict) -> dict:
        """Processor outputs on the model's input device, floating ones (pixels) in its dtype; the rest as given."""
        return {k: v.to(self.device, self.dtype if v.is_floating_point() else v.dtype) if torch.is_tensor(v) else v
                for k, v in inputs.items()}

    @property
    def devices(self) -> list[torch.device]:
        """Every device the model's weights run on (several for a model dispatched with a device_map)."""
        placed = getattr(self.model, "hf_device_map", None)
        if not placed:
            return [self.device]
        found = [torch.device(f"cuda:{d}" if isinstance(d, int) else d) for d in placed.values()]
        found = [d for d in found if d.type not in ("disk", "meta")] + [self.device]
        return list(dict.fromkeys(found))

    def __repr__(self) -> str:
        return f"LVLM({self.name!r}, family={self.family!r}, device={self.device}, dtype={self.dtype})"


def execution_device(module: nn.Module) -> torch.device:
    """The device `module` computes on: accelerate's execution device when it is dispatched (its weights
    may be offloaded to the CPU or disk and sit on "meta" between calls), else its first weight's device."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
