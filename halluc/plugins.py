"""Plugins: packages that register models, datasets or methods with halluc's registries.

A plugin is a function named in the `halluc.plugins` entry-point group of an installed package
(pyproject: `[project.entry-points."halluc.plugins"] name = "package.module:register"`). The
registries call `load_plugins()` before answering a lookup, so a plugin's names work everywhere
(CLI, API, runs) without anything importing it. halluc's own toy world registers itself this way.
"""
from __future__ import annotations

import warnings
from importlib.metadata import entry_points

GROUP = "halluc.plugins"
_loaded = False


def load_plugins() -> None:
    """Import and call every registered plugin, once per process."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for entry in entry_points(group=GROUP):
        try:
            entry.load()()
        except Exception as err:  # a broken third-party plugin must not break halluc itself
            warnings.warn(f"halluc plugin '{entry.name}' ({entry.value}) failed to load: {err}", stacklevel=2)
