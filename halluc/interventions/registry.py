"""Methods by name. A duplicate name raises; a miss lists the choices."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from halluc.errors import HallucError, unknown_choice
from halluc.interventions.base import DECODING_ARGUMENTS, Method
from halluc.registry import Registry

_BUILTINS = ("halluc.interventions",)  # the package imports every built-in method module


def _free_name(name: str, item: object) -> None:
    """A method and an alias never share a name."""
    if name in METHODS.peek() or name in ALIASES.peek():
        raise ValueError(f"method '{name}' is already registered")


def _check_method(name: str, cls: type[Method]) -> None:
    _free_name(name, cls)
    clashing = sorted({f.name for f in dataclasses.fields(cls)} & DECODING_ARGUMENTS)
    if clashing:
        raise ValueError(f"method '{name}': parameter '{clashing[0]}' has the name of a generate() argument; "
                         f"rename it (e.g. '{name}_{clashing[0]}')")


METHODS: Registry[type[Method]] = Registry("method", _BUILTINS, check=_check_method)
ALIASES: Registry[tuple[str, ...]] = Registry("method alias", _BUILTINS, check=_free_name)  # name -> its stack


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a Method subclass under its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    return METHODS.register(cls.name, cls)


def register_alias(name: str, stack: tuple[str, ...]) -> None:
    """`name` stands for stacking `stack` (e.g. "ritual-vcd" = RITUAL then VCD)."""
    ALIASES.register(name, tuple(stack))


def unregister(name: str) -> None:
    METHODS.unregister(name)
    ALIASES.unregister(name)


def method_names() -> list[str]:
    return sorted(METHODS.names())


def aliases() -> dict[str, tuple[str, ...]]:
    return ALIASES.items()


def method_class(name: str) -> type[Method]:
    stacks = ALIASES.items()
    if name in stacks:
        raise HallucError(f"'{name}' is an alias of {'+'.join(stacks[name])}, a stack of methods, not one method")
    if name not in METHODS:
        raise unknown_choice("method", name, [*METHODS.names(), *stacks])
    return METHODS.get(name)


def expand_aliases(names: list[str]) -> list[str]:
    """Names with every alias replaced by the stack it stands for."""
    stacks = ALIASES.items()
    return [n for name in names for n in stacks.get(name, (name,))]


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


# what `make_methods` takes: a name, a built method, or a sequence of them
MethodChoice = str | Method | Sequence[str | Method]


def make_methods(names: MethodChoice, params: Mapping[str, Any] | None = None
                 ) -> list[Method]:
    """Methods from names and one flat parameter mapping.

    A plain key (`alpha`) goes to the one method that has it (ambiguous keys raise);
    a dotted key (`vcd.alpha`) names the method explicitly.
    """
    given: list[str | Method] = [names] if isinstance(names, (str, Method)) else list(names)
    ready = [n for n in given if isinstance(n, Method) and n.name != "none"]
    if ready:  # already-built methods (e.g. from a run's entries) pass through
        if len(ready) != len(given) or params:
            raise HallucError("pass either built methods or names with parameters, not both")
        return ready
    expanded = expand_aliases([n.name if isinstance(n, Method) else n for n in given])
    chosen = [n for n in expanded if n != "none"] or ["none"]
    if len(set(chosen)) != len(chosen):
        raise HallucError(f"method listed twice: {', '.join(chosen)}")
    classes = {n: method_class(n) for n in chosen}
    per_method: dict[str, dict[str, Any]] = {n: {} for n in chosen}
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
        per_method[owners[0] if owners else chosen[0]][pname] = value
    return [make_method(n, per_method[n]) for n in chosen]
