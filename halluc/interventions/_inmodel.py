"""Plumbing shared by the in-model methods (VHR, VISTA, DAMRO, CCA): prefill detection, auxiliary
forward passes, and mapping rows of the running batch back to prompts.

Auxiliary passes (VHR's text-only pass, VISTA's two steering passes) run *inside* the first
generation step, from a forward pre-hook on decoder layer 0 (the one point every family reaches
during `generate`; InstructBLIP's `generate` never calls the top-level model's forward). While one
runs, `session.state[AUX]` names its owner: the owner's hooks record, every other hook of these
methods passes through, and every attention edit is switched off, so an auxiliary pass sees the
unmodified model whatever else is stacked.

Rows: the running batch is view-major (`len(session.views)` blocks of `len(session.prompts)` rows,
see `halluc.decoding.branches`) and HF repeats each row `num_beams` times before the first
forward, so row r of the running batch is row `r // per` of `session.inputs` and prompt
`(r // per) % len(prompts)`, with `per = rows / len(session.inputs rows)`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from halluc.errors import HallucError
from halluc.kernels.backend import active_edits
from halluc.kernels.edits import AttentionEdit
from halluc.models.cache import cache_of

AUX = "_aux_pass"  # session.state key: the method whose auxiliary pass is running


def is_prefill(kwargs: dict) -> bool:
    """True for the first forward of a sequence (no cached keys yet), from a layer's call kwargs."""
    cache = cache_of(kwargs)
    return cache is None or cache.get_seq_length() == 0


def aux_owner(session) -> str | None:
    """The method whose auxiliary pass is running, or None during the real forward."""
    return session.state.get(AUX)


@contextlib.contextmanager
def aux_pass(session, owner: str) -> Iterator[None]:
    """Mark an auxiliary forward of `owner`; attention edits are off inside (noop edits on every layer)."""
    if session.state.get(AUX):
        raise RuntimeError(f"{owner}: auxiliary pass started inside {session.state[AUX]}'s")
    adapter, model = session.adapter, session.model
    noop = {adapter.attention(model, i): AttentionEdit() for i in range(adapter.num_layers(model))}
    session.state[AUX] = owner
    try:
        with active_edits(noop), torch.no_grad():
            yield
    finally:
        session.state.pop(AUX, None)


def image_forward(session) -> None:
    """The batch as given (`session.inputs`, every view, with its images), without a cache."""
    session.model(**session.inputs, use_cache=False)


def text_only_forward(session) -> None:
    """The prompts without their images (`build_inputs(processor, None, prompts)`): one row per prompt."""
    inputs = session.adapter.build_inputs(session.processor, None, session.prompts)
    device = session.lvlm.device
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    # InstructBLIP's conditional model cannot run without an image: its LM takes text-only inputs
    runner = getattr(session.adapter, "language_model", None)
    (runner(session.model) if runner else session.model)(**inputs, use_cache=False)


def rows_per_input(rows: int, session) -> int:
    """How many running-batch rows each row of `session.inputs` became (num_beams)."""
    base = session.inputs["input_ids"].shape[0]
    if rows % base:
        raise HallucError(f"batch of {rows} rows does not expand the {base} input rows")
    return rows // base


def input_rows(rows: int, session, device=None) -> torch.Tensor:
    """(rows,) index into `session.inputs` rows for each running-batch row."""
    return torch.arange(rows, device=device) // rows_per_input(rows, session)


def prompt_rows(rows: int, session, device=None) -> torch.Tensor:
    """(rows,) index of the prompt (row of a text-only pass) for each running-batch row."""
    return input_rows(rows, session, device) % len(session.prompts)


def last_token(output) -> torch.Tensor:
    """(B, d) fp32 last-position hidden state from a decoder layer's output (tensor or tuple)."""
    hidden = output[0] if isinstance(output, tuple) else output
    return hidden[:, -1].float()


def layer_tuple(method: str, pname: str, value) -> tuple[int, ...]:
    """A sorted tuple of distinct layer indices >= 0 from a list or tuple (HallucError otherwise)."""
    ok = isinstance(value, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                  for i in value)
    if not ok:
        raise HallucError(f"{method}: parameter '{pname}' must be a list of layer indices >= 0; got {value!r}")
    return tuple(sorted(set(value)))


def per_layer(fn, layer: int):
    """`fn(layer, *hook_args)` as a hook taking only the hook arguments."""
    return lambda *args: fn(layer, *args)
