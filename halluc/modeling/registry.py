"""One record per model family, and the offline models: everything else derives from these.

A `Family` declares, in one place: the HF model types it serves, its model and processor classes,
its adapter (module paths as data, image geometry as code), the real checkpoints it has aliases
for, and how to build its tiny offline model. `halluc models`, the loader, the tiny models, the
test fixtures and the speed benchmarks all read these records; nothing else names a family.

An `OfflineModel` is a named model built or read without a network: every family's tiny model,
and models plugins register (the toy world's `toy-llava`).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from halluc.errors import HallucError, unknown_choice
from halluc.plugins import load_plugins

if TYPE_CHECKING:
    from halluc.modeling.base import Adapter


@dataclass(frozen=True)
class Checkpoint:
    """A real checkpoint with a short alias (`halluc.load("llava")`)."""

    alias: str
    hub_id: str
    note: str = ""


@dataclass(frozen=True)
class Family:
    name: str  # adapter.family, e.g. "llava"
    title: str  # for people, e.g. "LLaVA-1.5"
    model_types: tuple[str, ...]  # HF `config.model_type` values it serves
    model_class: str  # transformers class name, resolved lazily
    processor_class: str | type  # transformers class name, or a class
    adapter: Adapter
    tiny_name: str  # the offline random-weight model, e.g. "tiny-llava"
    build_tiny: Callable[[], tuple[Any, Any, type]]  # () -> (config, processor, model class)
    checkpoints: tuple[Checkpoint, ...] = ()
    notes: str = ""
    refuse: Callable[[Any], str | None] = field(default=lambda config: None)  # config -> reason it cannot load
    # parameters the model class initialises to zero that would cut the image off in a random tiny model
    # (Gemma 3's multimodal projection): the tiny builder draws them at random instead
    tiny_random: tuple[str, ...] = ()
    # the text its processor turns into image (or video) positions: user text holding one is refused
    # (`halluc.modeling.placeholders`); plain strings, or `re:PATTERN` for a family of tokens
    placeholders: tuple[str, ...] = ()


@dataclass(frozen=True)
class OfflineModel:
    """A model that loads without a network: `load(seed) -> (model, processor)`."""

    name: str
    family: str
    load: Callable[[int], tuple[Any, Any]]
    note: str = ""
    revision: Callable[[int], str] = field(default=lambda seed: f"random-init seed={seed}")
    check: Callable[[], None] = field(default=lambda: None)  # raises HallucError when it cannot load


_FAMILIES: dict[str, Family] = {}
_BY_MODEL_TYPE: dict[str, Family] = {}
_OFFLINE: dict[str, OfflineModel] = {}


def register_family(family: Family) -> Family:
    if family.name in _FAMILIES:
        raise ValueError(f"family '{family.name}' is already registered")
    clash = [t for t in family.model_types if t in _BY_MODEL_TYPE]
    if clash:
        raise ValueError(f"model type '{clash[0]}' already belongs to family '{_BY_MODEL_TYPE[clash[0]].name}'")
    _FAMILIES[family.name] = family
    _BY_MODEL_TYPE.update({t: family for t in family.model_types})
    register_model(OfflineModel(family.tiny_name, family.name, lambda seed, f=family.name: _tiny(f, seed),
                                note=f"{family.title}, random weights, for tests and smoke runs"))
    return family


def register_model(model: OfflineModel) -> OfflineModel:
    if model.name in _OFFLINE:
        raise ValueError(f"model '{model.name}' is already registered")
    _OFFLINE[model.name] = model
    return model


def _builtin() -> None:
    """Register the built-in families on first use (this module stays light: `halluc score` needs no torch)."""
    importlib.import_module("halluc.modeling.families")


def families() -> list[Family]:
    _builtin()
    return list(_FAMILIES.values())


def family(name: str) -> Family:
    _builtin()
    if name not in _FAMILIES:
        raise unknown_choice("model family", name, _FAMILIES)
    return _FAMILIES[name]


def family_for(config_or_type: Any) -> Family:
    """The family of a config (or a model_type string); HallucError naming the supported ones."""
    _builtin()
    model_type = config_or_type if isinstance(config_or_type, str) else config_or_type.model_type
    if model_type not in _BY_MODEL_TYPE:
        raise HallucError(f"model type '{model_type}' is not supported; supported model types: "
                          f"{', '.join(sorted(_BY_MODEL_TYPE))}")
    record = _BY_MODEL_TYPE[model_type]
    reason = None if isinstance(config_or_type, str) else record.refuse(config_or_type)
    if reason:
        raise HallucError(reason)
    return record


def knows(model_type: str) -> bool:
    """Whether a family record serves this HF model type."""
    _builtin()
    return model_type in _BY_MODEL_TYPE


def checkpoints() -> dict[str, tuple[Family, Checkpoint]]:
    """alias -> (family, checkpoint) over every family."""
    _builtin()
    return {c.alias: (f, c) for f in _FAMILIES.values() for c in f.checkpoints}


def offline_models() -> dict[str, OfflineModel]:
    _builtin()
    load_plugins()
    return dict(_OFFLINE)


def known_family(name: str) -> str | None:
    """The family of an alias or offline model, known before any weights are loaded (else None)."""
    offline = offline_models().get(name)
    if offline is not None:
        return offline.family
    entry = checkpoints().get(name)
    return entry[0].name if entry else None


def model_names() -> list[str]:
    return [*checkpoints(), *offline_models()]


def _tiny(name: str, seed: int):
    from halluc.modeling.tiny import build_tiny  # same layer: tiny.py builds from these records

    return build_tiny(name, seed=seed)
