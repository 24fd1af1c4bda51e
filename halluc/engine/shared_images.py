"""Each distinct image through the vision tower once per model call.

A POPE batch asks several questions about each image (six per image in POPE's files, two in MME's),
and a contrast view repeats the images again: DAMRO's, SID's and ICD's views keep them, and VCD's
noise and RITUAL's transformation are keyed by the image's pixels, so equal images give equal views.
The tower maps each pixel row on its own, so it runs on the distinct rows and its outputs are spread
back to every row: the same features, a fraction of the work.

Only where that is certain: a tower called with one batched pixel tensor (N, C, H, W) and no other
tensor (Qwen2-VL's flattened patches with their grids, Idefics3's patch masks and Pixtral's image
sizes run as before), and only while nothing else watches the tower (a hook of anyone but
transformers on any of its modules, an attention edit on one of its layers): a method that reads the
tower row by row sees every row.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from halluc.images import distinct_rows
from halluc.kernels.backend import current_edits


@contextlib.contextmanager
def distinct_images_once(tower: nn.Module | None) -> Iterator[None]:
    """Within the block, a call of `tower` whose pixel rows repeat runs on the distinct rows only."""
    if tower is None:
        yield
        return
    spread: list[torch.Tensor] = []  # the current call's row -> distinct row index (empty: not deduplicated)

    def before(module, args, kwargs):
        spread.clear()
        pixels, replace = _pixel_argument(args, kwargs)
        if pixels is None or _watched(module):
            return None
        distinct, inverse = distinct_rows(pixels)
        if distinct.shape[0] == pixels.shape[0]:
            return None
        spread.append(inverse)
        return replace(distinct)

    def after(module, args, kwargs, output):
        return _spread(output, spread.pop()) if spread else None

    handles = [tower.register_forward_pre_hook(before, with_kwargs=True),
               tower.register_forward_hook(after, with_kwargs=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _pixel_argument(args: tuple, kwargs: dict):
    """(the pixel tensor, a function giving (args, kwargs) with it replaced), or (None, None) when the call
    is not one batched 4-D pixel tensor alone among its tensors."""
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    if len(tensors) != 1 or tensors[0].dim() != 4 or tensors[0].shape[0] < 2:
        return None, None
    if args and args[0] is tensors[0]:
        return tensors[0], lambda new: ((new, *args[1:]), kwargs)
    key = next((k for k, v in kwargs.items() if v is tensors[0]), None)
    if key is None:  # the tensor is a later positional argument: not known to be the pixels
        return None, None
    return tensors[0], lambda new: (args, {**kwargs, key: new})


def _watched(tower: nn.Module) -> bool:
    """A hook on any module of the tower (besides ours and transformers' own output capturing, which
    records inside the call whose output is spread), or an attention edit on one of them."""
    edited = current_edits()
    return any(m in edited or any(_foreign(h) for h in (*m._forward_pre_hooks.values(), *m._forward_hooks.values()))
               for m in tower.modules())


def _foreign(hook) -> bool:
    return not getattr(hook, "__module__", "").startswith((__name__, "transformers."))


def _spread(output, inverse: torch.Tensor):
    """Every per-row tensor of the tower's output (a tensor, a tuple or a ModelOutput), rows taken by `inverse`."""
    rows = int(inverse.max()) + 1

    def take(value):
        if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == rows:
            return value.index_select(0, inverse)
        if isinstance(value, tuple):
            return type(value)(take(v) for v in value)
        return value

    if isinstance(output, dict):  # a ModelOutput keeps its class and field order
        for key in list(output.keys()):
            output[key] = take(output[key])
        return output
    return take(output)
