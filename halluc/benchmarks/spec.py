"""What a benchmark reports: its metrics (in report order, headline first), how to read each one,
and its registry entry. Each task module declares its own `BenchmarkSpec`; the run, the report and
the intervals read it from here by name, so adding a benchmark touches its module and its tests.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from halluc.errors import unknown_choice


@dataclass(frozen=True)
class Metric:
    """One reported number.

    key:      the result-row key (`halluc score` prints the same keys)
    label:    the column header for people; unique across benchmarks ("POPE recall", "object recall")
    better:   "higher", "lower", or None for descriptive numbers (n, caption length, yes ratio)
    unit:     "%" for percentages, "" for plain numbers, or a word ("tokens")
    reference: a value the report's plots draw as a line (yes ratio: 50, balanced answers), or None
    """

    key: str
    label: str
    better: str | None = None
    unit: str = "%"
    description: str = ""
    reference: float | None = None


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark's reporting knowledge.

    headline:      the metric a leaderboard sorts by and reports deltas and intervals for
    metrics:       every reported metric, headline first
    summary_split: the split name of the row that summarises the benchmark (POPE's "mean"; MME's
                   "perception"), or None when it has a single split
    build:         `(protocol, splits, data, images, max_new_tokens) -> Task` from command-line words
    summary_rows:  `(per-split rows) -> extra rows` (POPE's mean, MME's totals)
    corrects:      the benchmark whose questions this one relabels (RePOPE: "pope"); the report shows rank changes
    compact:       metric keys a compact leaderboard (terminal, README) shows after the headline; empty: the
                   next two metrics with a direction
    tradeoff:      (x, y) metric keys the report plots against each other (CHAIR: object recall, CHAIR_I)
    """

    name: str
    title: str
    headline: str
    metrics: tuple[Metric, ...]
    build: Callable[..., Any]
    summary_rows: Callable[[list[dict]], list[dict]] = lambda rows: []
    summary_split: str | None = None
    corrects: str | None = None
    compact: tuple[str, ...] = ()
    tradeoff: tuple[str, str] | None = None

    def metric(self, key: str) -> Metric:
        return next(m for m in self.metrics if m.key == key)

    @property
    def higher_is_better(self) -> bool:
        return self.metric(self.headline).better != "lower"

    def keys(self) -> list[str]:
        return [m.key for m in self.metrics]


_SPECS: dict[str, BenchmarkSpec] = {}


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    if spec.name in _SPECS:
        raise ValueError(f"benchmark '{spec.name}' is already registered")
    if spec.headline not in spec.keys():
        raise ValueError(f"benchmark '{spec.name}': headline '{spec.headline}' is not one of its metrics")
    named = [*spec.compact, *(spec.tradeoff or ())]
    if any(key not in spec.keys() for key in named):
        raise ValueError(f"benchmark '{spec.name}': compact and tradeoff name metrics it does not have")
    _SPECS[spec.name] = spec
    return spec


def benchmark_spec(name: str) -> BenchmarkSpec:
    _builtin()
    if name not in _SPECS:
        raise unknown_choice("benchmark", name, _SPECS)
    return _SPECS[name]


def benchmark_names() -> list[str]:
    _builtin()
    return list(_SPECS)


def _builtin() -> None:
    from halluc.benchmarks import tasks  # noqa: F401  (same layer: the task modules register their specs)
