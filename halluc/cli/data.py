"""`halluc data fetch|where`."""
from __future__ import annotations

from pathlib import Path

import typer

from halluc import api
from halluc.cli.common import OneLineUsageErrors, friendly_errors, stderr

data_app = typer.Typer(rich_markup_mode=None,
                       help="Benchmark files: fetch from pinned official sources, or see where they go.",
                       no_args_is_help=True)


@data_app.command("fetch", cls=OneLineUsageErrors)
@friendly_errors
def fetch_command(benchmark: str = typer.Argument(..., help=f"{', '.join(api.fetchable())}."),
                  home: Path = typer.Option(None, help=f"Data home (default {api.data_home()}, or $HALLUC_DATA).")
                  ) -> None:
    """Download and verify BENCHMARK's question files and annotations."""
    for path in api.fetch(benchmark, home):
        typer.echo(str(path))
    stderr(f"images are not fetched: {api.fetchable()[benchmark].images}")


@data_app.command("where", cls=OneLineUsageErrors)
def where_command() -> None:
    """Where each benchmark's files go, and their pinned sources."""
    for benchmark, data in api.fetchable().items():
        for remote in data.remotes:
            typer.echo(f"{benchmark:<6} {api.data_home() / remote.target}  <-  {remote.url}")
        typer.echo(f"{benchmark:<6} {data.images}")
