"""Hooks with a context: a method's hook is `fn(activation, ctx) -> replacement or None`.

`attach` registers every `HookSpec` through `register_hook`, which does what each method did by hand before:
it reads the hook's arguments (the activation is a forward hook's output, or a pre-hook's first input), skips
the hook while another method's auxiliary pass runs (`HookSpec.aux=True` lets a hook also run in its own
method's passes), and hands over a `HookContext`: the layer, prefill or decode, the row maps of the running
batch (beams and branch views), the method's state, and whose auxiliary pass is running.

A pre-hook replaces its activation by returning a tensor, or overrides keyword arguments of the call by
returning a dict (`{"position_ids": ...}`); a forward hook replaces the output by returning it.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from halluc.engine.steps import is_prefill
from halluc.interventions.aux import aux_owner

_LAYER = re.compile(r"layers\.(\d+)(?:\.|$)")


@dataclass(frozen=True)
class HookSpec:
    """One hook on a canonical adapter point (see `halluc.modeling.base`).

    fn:   `fn(activation, ctx)`; returns a replacement (see the module docstring) or None
    kind: "forward" (after the module; the activation is its output) or "forward_pre" (before it; the
          activation is its first input, positional or `hidden_states`)
    aux:  also run during this method's own auxiliary passes (`ctx.in_aux` tells them apart); every hook
          is skipped during another method's
    """

    point: str
    fn: Callable[[Any, HookContext], Any]
    kind: str = "forward"
    aux: bool = False

    def __post_init__(self):
        if self.kind not in ("forward", "forward_pre"):
            raise ValueError(f"HookSpec.kind must be 'forward' or 'forward_pre', got {self.kind!r}")

    @property
    def layer(self) -> int | None:
        """The decoder layer of the point (`layers.3.mlp` -> 3), or None (`lm_head`, `model`, ...)."""
        found = _LAYER.match(self.point)
        return int(found.group(1)) if found else None


@dataclass
class HookContext:
    """What a hook sees besides its activation, for one call of the hooked module."""

    session: Any  # the Session of this generate call
    method: str
    point: str
    layer: int | None
    args: tuple
    kwargs: dict
    owner: str | None  # the method whose auxiliary pass is running, or None in the real forward
    state: Any = None  # the method's state (`Method.new_state()`), made by attach
    output: Any = field(default=None, repr=False)  # a forward hook's output (its activation)

    @property
    def input(self) -> Any:
        """The module's first input: positional, else `hidden_states`."""
        return self.args[0] if self.args else self.kwargs.get("hidden_states")

    @property
    def in_aux(self) -> bool:
        """Whether this call is part of the method's own auxiliary pass."""
        return self.owner is not None

    @property
    def prefill(self) -> bool:
        """True on the call that reads the prompt (this layer has cached nothing yet), False on decode steps.
        Read from the call's cache, which decoder layers and the model see; other points (`lm_head`,
        `projector`) do not, and asking there is a programming error."""
        if self.layer is None and self.point != "model":
            raise RuntimeError(f"{self.method}: prefill or decode is unknown at '{self.point}' (no cache there); "
                               "ask in a hook on a decoder layer or the model")
        return is_prefill(self.kwargs, self.layer or 0)

    @property
    def phase(self) -> str:
        return "prefill" if self.prefill else "decode"

    def input_rows(self, running: int, device=None) -> torch.Tensor:
        """(running,) the input row (sample × view) of each running row (beams expand rows in place)."""
        return self.session.input_index(running, device)

    def sample_rows(self, running: int, device=None) -> torch.Tensor:
        """(running,) the sample of each running row, whatever its view or beam."""
        return self.session.sample_index(running, device)

    def original_rows(self, running: int, device=None) -> torch.Tensor | None:
        """(running,) bool: the rows decoding the original view, or None when all do (no branch views)."""
        return self.session.original_rows(running, device)


def register_hook(module: nn.Module, spec: HookSpec, session: Any, method: str):
    """Register `spec` on `module` for `method`; the torch handle (its `remove()` takes it back out)."""
    layer = spec.layer

    def context(args, kwargs, output=None) -> HookContext | None:
        owner = aux_owner(session)
        if owner is not None and not (spec.aux and owner == method):
            return None
        return HookContext(session, method, spec.point, layer, args, kwargs, owner, session.state.get(method),
                           output)

    if spec.kind == "forward_pre":
        def before(mod, args, kwargs):
            ctx = context(args, kwargs)
            if ctx is None:
                return None
            new = spec.fn(ctx.input, ctx)
            if new is None:
                return None
            if isinstance(new, dict):
                return args, {**kwargs, **new}
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})

        return module.register_forward_pre_hook(before, with_kwargs=True)

    def after(mod, args, kwargs, output):
        ctx = context(args, kwargs, output)
        return None if ctx is None else spec.fn(output, ctx)

    return module.register_forward_hook(after, with_kwargs=True)
