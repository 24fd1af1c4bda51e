"""`halluc report`: leaderboards from finished runs."""
from __future__ import annotations

from pathlib import Path

import typer

from halluc.benchmarks.report import distinct_run_dirs, render_terminal, write_report
from halluc.cli.common import friendly_errors, stderr


@friendly_errors
def report(
    runs: list[Path] = typer.Argument(..., help="Run directories (each with results.json); one given twice is read "
                                      "once."),
    out: Path = typer.Option(None, help="Write leaderboard.{md,csv,json,html} into this directory."),
    bootstrap: int = typer.Option(1000, min=0, help="Paired bootstrap resamples for the 95% intervals (0 = none)."),
    wide: bool = typer.Option(False, "--wide", help="Terminal: every column and interval, however wide."),
) -> None:
    """Per-benchmark leaderboards of one or more runs: deltas against vanilla with intervals, and cost."""
    from halluc.benchmarks.intervals import report_with_intervals

    directories, repeated = distinct_run_dirs(runs)
    for run_dir in repeated:
        stderr(f"note: {run_dir} was given more than once; it is read once")
    board = report_with_intervals(directories, bootstrap)
    typer.echo(render_terminal(board, wide=wide))
    if out is not None:
        paths = write_report(board, out)
        stderr("wrote " + ", ".join(str(p) for p in paths.values()))
