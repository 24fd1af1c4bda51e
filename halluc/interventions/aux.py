"""Auxiliary forward passes of in-model methods (VHR's text-only pass, VISTA's two steering passes).

They run *inside* the first generation step, from a forward pre-hook on decoder layer 0 (the one
point every family reaches during `generate`; InstructBLIP's `generate` never calls the top-level
model's forward). While one runs, `session.state[AUX]` names its owner: the owner's hooks record,
every other hook passes through (`aux_owner(session)` is not None), and every attention edit is
switched off, so an auxiliary pass sees the unmodified model whatever else is stacked.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from halluc.kernels.backend import BACKEND, active_edits, register_backend
from halluc.kernels.edits import AttentionEdit

AUX = "_aux_pass"  # session.state key: the method whose auxiliary pass is running


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


@contextlib.contextmanager
def backend_selected(session, needed: bool = True) -> Iterator[None]:
    """The LM's attention runs on the halluc backend inside the block (when `needed`), even when a wrapped model
    runs another one; the previous implementation is restored on exit."""
    text_config = session.adapter.text_config(session.model)
    previous = text_config._attn_implementation
    switch = needed and previous != BACKEND
    if switch:
        register_backend()
        session.model.set_attn_implementation({session.adapter.text_config_key: BACKEND})
    try:
        yield
    finally:
        if switch:
            session.model.set_attn_implementation({session.adapter.text_config_key: previous})


@contextlib.contextmanager
def reading_attention(session, edits: dict[int, AttentionEdit]) -> Iterator[None]:
    """Inside the owner's auxiliary pass: these {layer: edit} on (edits that read the attention, e.g. a side
    output), on halluc's backend even when a wrapped model runs another one (switched back on exit)."""
    adapter, model = session.adapter, session.model
    with backend_selected(session), active_edits({adapter.attention(model, i): edit for i, edit in edits.items()}):
        yield


def text_only_forward(session) -> None:
    """The prompts without their images (`build_inputs(processor, None, prompts)`): one row per prompt."""
    inputs = session.adapter.build_inputs(session.processor, None, session.prompts)
    device = session.lvlm.device
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    session.adapter.text_model(session.model)(**inputs, use_cache=False)


def last_token(output) -> torch.Tensor:
    """(B, d) fp32 last-position hidden state from a decoder layer's output (tensor or tuple)."""
    hidden = output[0] if isinstance(output, tuple) else output
    return hidden[:, -1].float()
