"""The `halluc` command: a thin typer layer over the Python API."""
from __future__ import annotations

from halluc.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
