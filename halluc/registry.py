"""One registry type for everything halluc looks up by name: methods, method aliases, model families,
offline models, benchmarks and datasets.

A `Registry[T]` maps names to items. It refuses a duplicate name (`ValueError`: a programming error),
answers an unknown name with one line and a "did you mean" (`HallucError`: a user error), and fills itself
lazily: on every lookup it imports its built-in modules (once) and loads the entry-point plugins (once per
process), so a plugin's names work everywhere without anything importing it. Built-ins are named as module
paths, imported by name, so a registry in a lower module never imports the modules that register into it.

For tests, `registered(name, item)` adds an item for the length of a `with` block.
"""
from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from halluc.errors import unknown_choice
from halluc.plugins import load_plugins

T = TypeVar("T")


class Registry(Generic[T]):
    """Named items of one kind.

    kind:      what an item is, for messages ("method", "benchmark")
    builtins:  modules whose import registers the built-in items
    plugins:   whether a lookup loads the `halluc.plugins` entry points first
    check:     called as `check(name, item)` before an item is added; raises ValueError to refuse it
    """

    def __init__(self, kind: str, builtins: Sequence[str] = (), *, plugins: bool = True,
                 check: Callable[[str, T], None] | None = None) -> None:
        self.kind = kind
        self._builtins = tuple(builtins)
        self._plugins = plugins
        self._check = check
        self._items: dict[str, T] = {}
        self._loaded = False

    # ---- adding -----------------------------------------------------------------------------
    def register(self, name: str, item: T) -> T:
        """Add `item` under `name`; a name already taken raises ValueError."""
        if not name:
            raise ValueError(f"a {self.kind} needs a name")
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        if self._check is not None:
            self._check(name, item)
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    @contextlib.contextmanager
    def registered(self, name: str, item: T) -> Iterator[T]:
        """`item` under `name` inside the block only (tests)."""
        self.register(name, item)
        try:
            yield item
        finally:
            self.unregister(name)

    # ---- looking up ---------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """The item named `name`, or one line naming the choices (and the closest one)."""
        self._load()
        if name not in self._items:
            raise unknown_choice(self.kind, name, self._items)
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def names(self) -> list[str]:
        """Every name, in registration order."""
        self._load()
        return list(self._items)

    def items(self) -> dict[str, T]:
        self._load()
        return dict(self._items)

    def peek(self) -> dict[str, T]:
        """What is registered now, without loading anything (for checks made while registering)."""
        return dict(self._items)

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._builtins:
                importlib.import_module(module)
        if self._plugins:
            load_plugins()
