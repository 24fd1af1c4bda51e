"""Command groups plugins add to `halluc` (the toy world adds `halluc world`)."""
from __future__ import annotations

import sys

import typer

COMMAND_GROUPS: dict[str, typer.Typer] = {}


def register_commands(name: str, group: typer.Typer) -> None:
    """Add `halluc NAME ...`. The app adds every group registered before it is built; a plugin that registers
    after (its registration itself imported the CLI, while a registry lookup was loading the plugins) is added
    to the built app here. The app is looked up, not imported: it imports this module."""
    if name in COMMAND_GROUPS:
        raise ValueError(f"command group '{name}' is already registered")
    COMMAND_GROUPS[name] = group
    built = getattr(sys.modules.get("halluc.cli.app"), "app", None)
    if built is not None and all(info.name != name for info in built.registered_groups):
        built.add_typer(group, name=name)
