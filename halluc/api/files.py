"""The API calls that need no model and no torch: benchmark files, scoring saved outputs, reports.

`halluc score`, `halluc data` and `halluc report` are thin commands over these, so they start fast.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from halluc.benchmarks import fetch as _fetch
from halluc.benchmarks import paths
from halluc.benchmarks.spec import BENCHMARKS, BenchmarkData, ScoreCommand, ScoreTable
from halluc.errors import unknown_choice
from halluc.limits import MAX_BOOTSTRAP, check_number
from halluc.plugins import load_plugins
from halluc.reports.model import Report, Run, build_report, distinct_run_dirs, load_runs
from halluc.reports.render import render_terminal, write_report

__all__ = ["BenchmarkData", "Report", "ScoreCommand", "ScoreTable", "data_home", "distinct_run_dirs", "fetch",
           "fetchable", "load_plugins", "render_terminal", "report", "score", "score_commands", "write_report"]


def data_home() -> Path:
    """Where benchmark files live: $HALLUC_DATA or ~/.cache/halluc/data."""
    return paths.data_home()


def fetchable() -> dict[str, BenchmarkData]:
    """Every benchmark with files to fetch, with its data description (files, images note, HF source)."""
    return _fetch.fetchable()


def fetch(benchmark: str, home: Path | None = None) -> list[Path]:
    """Download, verify and unpack `benchmark`'s question files and annotations; the paths written."""
    return _fetch.fetch(benchmark, home)


def score_commands() -> dict[str, ScoreCommand]:
    """Every benchmark that scores saved outputs (`halluc score NAME`), with its command."""
    return {name: spec.score for name, spec in BENCHMARKS.items().items() if spec.score is not None}


def score(benchmark: str, **files) -> dict:
    """Score saved outputs with the benchmark's official rules, as `halluc score BENCHMARK` does.

        >>> halluc.score("pope", questions="coco_pope_random.json", answers="answers.jsonl")
    """
    commands = score_commands()
    if benchmark not in commands:
        raise unknown_choice("benchmark", benchmark, commands)
    return commands[benchmark].run(**files)


def report(run_dirs: Sequence[Path], bootstrap: int = 1000, gain: bool = True) -> Report:
    """Per-benchmark leaderboards of finished runs, with paired-bootstrap 95% intervals of every delta
    against vanilla (`bootstrap` resamples; 0: none) and, with `gain`, the "Is the gain real?" analysis
    (threshold-free metrics, the calibration frontier, flips). Render with `render_terminal` or `write_report`."""
    check_number("--bootstrap", bootstrap, integer=True, low=0, high=MAX_BOOTSTRAP)  # before any work
    directories, _ = distinct_run_dirs(run_dirs)
    loaded = load_runs(directories)
    if bootstrap:
        from halluc.evaluation.intervals import run_intervals  # reads the samples; imports the runner

        loaded = [replace(run, intervals=run_intervals(_directory(run), run.config, n=bootstrap)) for run in loaded]
    if gain and bootstrap:  # its statistics are intervals: no resamples, no analysis (as for the deltas)
        from halluc.evaluation.gain import run_gain

        loaded = [replace(run, gain=run_gain(_directory(run), run.config, n=bootstrap)) for run in loaded]
    return build_report(loaded, bootstrap)


def _directory(run: Run) -> Path:
    """The directory a run was read from (every run `load_runs` gives has one)."""
    assert run.path is not None
    return run.path
