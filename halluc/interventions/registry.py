"""Methods by name. A duplicate name raises; a miss lists the choices."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from halluc.errors import HallucError, unknown_choice
from halluc.interventions.base import DECODING_ARGUMENTS, Method

_REGISTRY: dict[str, type[Method]] = {}
_ALIASES: dict[str, tuple[str, ...]] = {}  # name -> the stack of methods it stands for


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a Method subclass under its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY or cls.name in _ALIASES:
        raise ValueError(f"method '{cls.name}' is already registered")
    clashing = sorted({f.name for f in dataclasses.fields(cls)} & DECODING_ARGUMENTS)
    if clashing:
        raise ValueError(f"method '{cls.name}': parameter '{clashing[0]}' has the name of a generate() argument; "
                         f"rename it (e.g. '{cls.name}_{clashing[0]}')")
    _REGISTRY[cls.name] = cls
    return cls


def register_alias(name: str, stack: tuple[str, ...]) -> None:
    """`name` stands for stacking `stack` (e.g. "ritual-vcd" = RITUAL then VCD)."""
    if name in _REGISTRY or name in _ALIASES:
        raise ValueError(f"method '{name}' is already registered")
    _ALIASES[name] = tuple(stack)


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)
    _ALIASES.pop(name, None)


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def aliases() -> dict[str, tuple[str, ...]]:
    return dict(_ALIASES)


def method_class(name: str) -> type[Method]:
    if name in _ALIASES:
        raise HallucError(f"'{name}' is an alias of {'+'.join(_ALIASES[name])}, a stack of methods, not one method")
    if name not in _REGISTRY:
        raise unknown_choice("method", name, [*_REGISTRY, *_ALIASES])
    return _REGISTRY[name]


def expand_aliases(names: list[str]) -> list[str]:
    """Names with every alias replaced by the stack it stands for."""
    return [n for name in names for n in _ALIASES.get(name, (name,))]


def make_method(name: str, params: Mapping[str, Any] | None = None) -> Method:
    """Instantiate a method; unknown parameters name the valid ones."""
    cls = method_class(name)
    params = dict(params or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        valid = ", ".join(sorted(known)) or "none"
        raise HallucError(f"method '{name}' has no parameter '{unknown[0]}'; its parameters: {valid}")
    return cls(**params)


def make_methods(names: str | list[str] | tuple[str, ...], params: Mapping[str, Any] | None = None) -> list[Method]:
    """Methods from names and one flat parameter mapping.

    A plain key (`alpha`) goes to the one method that has it (ambiguous keys raise);
    a dotted key (`vcd.alpha`) names the method explicitly.
    """
    names = [names] if isinstance(names, (str, Method)) else list(names)
    ready = [n for n in names if isinstance(n, Method) and n.name != "none"]
    if ready:  # already-built methods (e.g. from a run's entries) pass through
        if len(ready) != len(names) or params:
            raise HallucError("pass either built methods or names with parameters, not both")
        return ready
    names = expand_aliases([n.name if isinstance(n, Method) else n for n in names])
    names = [n for n in names if n != "none"] or ["none"]
    if len(set(names)) != len(names):
        raise HallucError(f"method listed twice: {', '.join(names)}")
    classes = {n: method_class(n) for n in names}
    per_method: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in (params or {}).items():
        owner, _, pname = key.rpartition(".")
        if owner:
            if owner not in per_method:
                raise HallucError(f"parameter '{key}' names method '{owner}', which is not selected")
            per_method[owner][pname] = value
            continue
        owners = [n for n, c in classes.items() if pname in {f.name for f in dataclasses.fields(c)}]
        if len(owners) > 1:
            raise HallucError(f"parameter '{key}' is ambiguous between {', '.join(owners)}; "
                              f"write e.g. '{owners[0]}.{key}'")
        per_method[owners[0] if owners else names[0]][pname] = value
    return [make_method(n, per_method[n]) for n in names]
