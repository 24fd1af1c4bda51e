"""Wire a list of methods into a model for one generate call, and take exactly that back out.

Everything is resolved (hook points, attention modules, family support, conflicts) before a single
hook is registered, so a bad request leaves nothing behind; removal happens in `finally`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from halluc.engine.search import Search
from halluc.errors import HallucError, MethodRefused
from halluc.interventions.aux import backend_selected
from halluc.interventions.base import Method
from halluc.interventions.hooks import register_hook
from halluc.interventions.session import Session
from halluc.kernels.backend import active_edits
from halluc.kernels.edits import AttentionEdit
from halluc.modeling.base import Adapter
from halluc.modeling.cache import cache_of
from halluc.modeling.registry import family as family_record


@dataclass
class Attached:
    """What the generate loop needs from the attached methods."""

    logits_processors: list[Any] = field(default_factory=list)
    search: Search | None = None


@contextlib.contextmanager
def attach(session: Session, methods: Sequence[Method]) -> Iterator[Attached]:
    check_compatible(session.adapter, methods)
    adapter, model = session.adapter, session.model
    for m in methods:  # each method's fresh state, shared by its hooks (`ctx.state`)
        state = m.new_state()
        if state is not None:
            session.state[m.name] = state
    specs = [(m.name, spec) for m in methods for spec in m.hooks(session)]
    modules = [adapter.resolve(model, spec.point) for _, spec in specs]  # raises before any hook exists
    edits, scales = _collect_edits(session, methods)
    searching = [m for m in methods if m.replaces_search]
    if searching and len(session.views) > 1:  # its own loop runs the original rows only: no branch views
        raise HallucError(f"{searching[0].name} replaces the search; it cannot be stacked with a method that adds "
                          f"decoding branches ({', '.join(session.views[1:])})")
    searches = [s for m in searching if (s := m.search(session)) is not None]
    attached = Attached(logits_processors=[p for m in methods for p in m.logits_processors(session)],
                        search=searches[0] if searches else None)
    handles = []
    try:
        for module, (owner, spec) in zip(modules, specs):
            handles.append(register_hook(module, spec, session, owner))
        handles += [_track_cached_positions(module, edit) for module, edit in edits.items()
                    if getattr(module, "sliding_window", None) is not None]
        with backend_selected(session, needed=bool(edits or scales)), active_edits(edits, scales):
            yield attached
    finally:
        for handle in reversed(handles):
            handle.remove()


NEEDS = {"grid": "2-D image grids", "vision_cls": "a vision CLS token's attention",
         "pre_norm_block": "pre-norm decoder layers (a norm, then the FFN, after the attention's residual)"}


def check_compatible(target: str | Adapter, methods: Sequence[Method]) -> None:
    """Refuse unsupported families and pairs that cannot share one run, before touching the model.

    `target` is a family name (its record's adapter is looked up) or a model's adapter.
    """
    adapter = family_record(target).adapter if isinstance(target, str) else target
    family = adapter.family
    for m in methods:
        if not m.supports(family):
            raise MethodRefused(f"method '{m.name}' does not support {family} models "
                              f"(it supports: {', '.join(sorted(m.families or ()))})")
        missing = _missing(adapter, m)
        if missing:
            raise MethodRefused(f"method '{m.name}' needs {NEEDS.get(missing, missing)}, which the {family} "
                              "adapter does not provide")
    owners: dict[str, str] = {}
    for m in methods:
        for claim in sorted(m.claims()):
            if claim in owners:
                raise MethodRefused(f"methods '{owners[claim]}' and '{m.name}' both rewrite the model's {claim}; "
                                  "stack at most one of them")
            owners[claim] = m.name
    searches = [m.name for m in methods if m.replaces_search]
    if len(searches) > 1:
        raise MethodRefused(f"methods {' and '.join(searches)} each replace the search; use one of them")
    fixed = [m.name for m in methods if m.fixed_rows]
    if searches and fixed:
        raise MethodRefused(f"method '{fixed[0]}' cannot be stacked with '{searches[0]}': it keeps per-row state "
                          f"from the prefill, and {searches[0]}'s search re-batches rows")


def unsupported(adapter: Adapter, method: Method) -> str | None:
    """Why `method` cannot run on `adapter`'s family, in a few words (for tables), or None."""
    if not method.supports(adapter.family):
        return f"{', '.join(sorted(method.families or ()))} only"
    missing = _missing(adapter, method)
    return f"needs {NEEDS.get(missing, missing)}" if missing else None


def _missing(adapter: Adapter, method: Method) -> str | None:
    """The first thing `method` needs that the adapter's geometry does not provide."""
    return next(iter(sorted(method.requires() - adapter.provides)), None)


def _collect_edits(session: Session, methods: Sequence[Method]
                   ) -> tuple[dict[nn.Module, AttentionEdit], dict[nn.Module, float]]:
    """The edits per attention module, and the score scales per module: an edit that only scales
    (`AttentionEdit.scale_only`) composes with whatever else edits its layer (the factors multiply), so it
    is kept apart and never claims the layer."""
    edits: dict[nn.Module, AttentionEdit] = {}
    scales: dict[nn.Module, float] = {}
    owner: dict[int, str] = {}
    for m in methods:
        for layer, edit in m.attention_edits(session).items():
            if edit.scale_only:
                module = session.adapter.attention(session.model, layer)
                scales[module] = scales.get(module, 1.0) * edit.scale
                continue
            if layer in owner:
                raise HallucError(f"methods '{owner[layer]}' and '{m.name}' both edit attention in layer {layer}")
            owner[layer] = m.name
            module = session.adapter.attention(session.model, layer)
            if edit.columns is None:  # methods may narrow it; by default every image token
                edit.columns = session.image_mask
            edits[module] = edit
    return edits, scales


def _track_cached_positions(module: nn.Module, edit: AttentionEdit):
    """Before each call of a sliding-window attention module, tell its edit how many positions the
    layer has cached: once the window is full the cache drops keys, and the backend needs the count
    to keep the edit's columns on the right keys (`AttentionEdit.cached_positions`)."""

    def record(attn, args, kwargs):
        cache = cache_of(kwargs)
        edit.cached_positions = cache.get_seq_length(attn.layer_idx) if cache is not None else 0

    return module.register_forward_pre_hook(record, with_kwargs=True)
