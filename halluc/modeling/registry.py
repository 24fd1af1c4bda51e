"""One record per model family, and the offline models: everything else derives from these.

A `Family` declares, in one place: the HF model types it serves, its model and processor classes,
its adapter (module paths as data, image geometry as code), the real checkpoints it has aliases
for, and how to build its tiny offline model. `halluc models`, the loader, the tiny models, the
test fixtures and the speed benchmarks all read these records; nothing else names a family.

An `OfflineModel` is a named model built or read without a network: every family's tiny model,
and models plugins register (the toy world's `toy-llava`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from halluc.errors import HallucError
from halluc.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedModel, ProcessorMixin

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
    processor_class: str | type[ProcessorMixin]  # transformers class name, or a class
    adapter: Adapter
    tiny_name: str  # the offline random-weight model, e.g. "tiny-llava"
    build_tiny: Callable[[], tuple[Any, Any, type[PreTrainedModel]]]  # () -> (config, processor, model class)
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


def _model_types_free(name: str, family: Family) -> None:
    owner = next((f for f in FAMILIES.peek().values() for t in family.model_types if t in f.model_types), None)
    if owner is not None:
        clash = next(t for t in family.model_types if t in owner.model_types)
        raise ValueError(f"model type '{clash}' already belongs to family '{owner.name}'")


# built-in families register on first use (this module stays light: `halluc score` needs no torch)
FAMILIES: Registry[Family] = Registry("model family", ("halluc.modeling.families",), plugins=False,
                                      check=_model_types_free)
OFFLINE_MODELS: Registry[OfflineModel] = Registry("model", ("halluc.modeling.families",))
_BY_MODEL_TYPE: dict[str, Family] = {}  # an index of FAMILIES, kept by register_family


def register_family(family: Family) -> Family:
    FAMILIES.register(family.name, family)
    _BY_MODEL_TYPE.update({t: family for t in family.model_types})
    return family


def register_model(model: OfflineModel) -> OfflineModel:
    return OFFLINE_MODELS.register(model.name, model)


def _builtin() -> None:
    FAMILIES.names()  # loads the built-in families


def families() -> list[Family]:
    return list(FAMILIES.items().values())


def family(name: str) -> Family:
    return FAMILIES.get(name)


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
    return {c.alias: (f, c) for f in FAMILIES.items().values() for c in f.checkpoints}


def offline_models() -> dict[str, OfflineModel]:
    return OFFLINE_MODELS.items()


def known_family(name: str) -> str | None:
    """The family of an alias or offline model, known before any weights are loaded (else None)."""
    offline = offline_models().get(name)
    if offline is not None:
        return offline.family
    entry = checkpoints().get(name)
    return entry[0].name if entry else None


def model_names() -> list[str]:
    return [*checkpoints(), *offline_models()]
