"""`halluc report`: leaderboards from finished runs."""
from __future__ import annotations

from pathlib import Path

import typer

from halluc.benchmarks.report import load_rows, render_terminal, write_report
from halluc.cli.common import friendly_errors, stderr


@friendly_errors
def report(
    runs: list[Path] = typer.Argument(..., help="Run directories (each with results.json)."),
    out: Path = typer.Option(None, help="Write leaderboard.{md,csv,json,html} here."),
    bootstrap: int = typer.Option(1000, help="Paired bootstrap resamples for Δ intervals (0 = none)."),
) -> None:
    """Leaderboard of one or more runs, with deltas against vanilla and cost columns."""
    from halluc.benchmarks.intervals import run_intervals

    rows = load_rows(runs)
    intervals = {}
    for run_dir in runs if bootstrap else []:
        intervals.update(run_intervals(run_dir, n=bootstrap))
    typer.echo(render_terminal(rows, intervals))
    if out is not None:
        paths = write_report(rows, out, intervals)
        stderr("wrote " + ", ".join(str(p) for p in paths.values()))
