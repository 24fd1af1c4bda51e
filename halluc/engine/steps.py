"""Small facts about one forward call that every hook needs: is this the prefill, which layers, which layer."""
from __future__ import annotations

from collections.abc import Callable

import torch

from halluc.errors import HallucError
from halluc.modeling.cache import cache_of


def is_prefill(kwargs: dict, layer: int = 0) -> bool:
    """True when decoder layer `layer` has cached nothing yet (its first forward), from a call's kwargs.

    Ask about the hooked layer itself: during a prefill, layer 0 has already written its keys when a
    later layer runs, so the cache's length at layer 0 is no longer zero there.
    """
    cache = cache_of(kwargs)
    return cache is None or cache.get_seq_length(layer) == 0


def call_positions(kwargs: dict, ids: torch.Tensor) -> torch.Tensor:
    """(B, T) position ids of a model call's tokens: the ones given, else those `generate` would use
    (from the padding mask, else counting on from the cache's length)."""
    if kwargs.get("position_ids") is not None:
        return kwargs["position_ids"]
    rows, length = ids.shape
    mask = kwargs.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        return (mask.long().cumsum(-1) - 1).clamp_min(0)[:, -length:]
    cache = cache_of(kwargs)
    done = 0 if cache is None else cache.get_seq_length()
    return (torch.arange(length, device=ids.device) + done)[None].expand(rows, -1).clone()


def layer_indices(method: str, pname: str, value) -> tuple[int, ...]:
    """A sorted tuple of distinct layer indices >= 0 from a list or tuple (HallucError otherwise)."""
    ok = isinstance(value, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                  for i in value)
    if not ok:
        raise HallucError(f"{method}: parameter '{pname}' must be a list of layer indices >= 0; got {value!r}")
    return tuple(sorted(set(value)))


def check_layers(method: str, layers: tuple[int, ...], num_layers: int) -> tuple[int, ...]:
    """`layers` unchanged, or a HallucError naming the first one the model does not have."""
    if layers and layers[-1] >= num_layers:
        raise HallucError(f"{method}: layer {layers[-1]} does not exist; the model has {num_layers} layers")
    return layers


def bind_layer(fn: Callable, layer: int) -> Callable:
    """`fn(layer, *hook_args)` as a hook taking only the hook's own arguments."""
    return lambda *args: fn(layer, *args)


def replace_last(output: torch.Tensor, last: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """An LM head's output (B, T, V) with its last position replaced by `last` (B, V) on `rows` ((B,) bool;
    None = every row); the output itself is left alone (a new tensor, no copy when T == 1 and all rows)."""
    last = last.to(output.dtype)
    if rows is not None:
        last = torch.where(rows[:, None], last, output[:, -1])
    if output.shape[1] == 1:
        return last[:, None]
    out = output.clone()
    out[:, -1] = last
    return out


def depth_band(first: int, last: int, num_layers: int, of: int = 32, highest: int | None = None) -> tuple[int, ...]:
    """Layers `first..last` (inclusive) of an `of`-layer model, scaled to `num_layers` by floor(i * n / of)
    and capped at `highest` (default the last layer); never empty. E.g. 9..14 of 32 -> 7..12 of 28, 0..1 of 3."""
    top = num_layers - 1 if highest is None else highest
    start, end = (first * num_layers) // of, (last * num_layers) // of
    end = max(0, min(end, top))
    return tuple(range(min(start, end), end + 1))
