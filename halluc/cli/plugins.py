"""Command groups plugins add to `halluc` (the toy world adds `halluc world`)."""
from __future__ import annotations

import typer

COMMAND_GROUPS: dict[str, typer.Typer] = {}


def register_commands(name: str, app: typer.Typer) -> None:
    if name in COMMAND_GROUPS:
        raise ValueError(f"command group '{name}' is already registered")
    COMMAND_GROUPS[name] = app
