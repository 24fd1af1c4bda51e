"""What a benchmark is: its metrics (in report order, headline first), how to read each one, where its
files come from, how it scores saved outputs, and its registry entry.

A benchmark is one folder under `halluc/benchmarks/` (`pope/`, `chair/`, ...): its scorer, its task and its
data description; its `task` module registers a `BenchmarkSpec`, and the registry finds the folder by itself.
The run, the report, the intervals, `halluc data fetch`, `--source hf` and `halluc score` read everything
from the spec by name, so adding a benchmark means its folder and its tests (docs/adding-a-benchmark.md).
"""
from __future__ import annotations

import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halluc.registry import Registry


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
class Remote:
    """One official file: where it is published, where it goes under the data home, and its checksum."""

    url: str
    target: str  # path under the data home
    sha256: str | None  # None: verified by content checks after download (the benchmark's notes say which)


@dataclass(frozen=True)
class HFSource:
    """A maintained HF dataset of the benchmark, at a pinned revision, and how its rows become the
    benchmark's local layout.

    plan:   `(split -> dataset) -> Plan` (halluc.benchmarks.sources): every file to write, checked first
    layout: `root -> (data, images)`: what the task's --data and --images are in the written folder
    """

    dataset: str
    revision: str
    config: str | None
    splits: tuple[str, ...]
    plan: Callable[[Mapping[str, Any]], Any]
    layout: Callable[[Path], tuple[Path, Path]]
    note: str = ""


@dataclass(frozen=True)
class BenchmarkData:
    """Where a benchmark's files come from: pinned downloads (question lists and annotations), a note on
    its images (large and licensed separately, never fetched), and an optional HF dataset source."""

    remotes: tuple[Remote, ...] = ()
    images: str = ""
    hf: HFSource | None = None


@dataclass(frozen=True)
class ScoreTable:
    """A table of a score's result for people (the CLI draws it; `--json` prints the result instead)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def metric_table(title: str, metrics: Mapping[str, Any]) -> ScoreTable:
    """Scalar metrics as a two-column table (floats to two decimals)."""
    return ScoreTable(title, ("metric", "value"), tuple(
        (name, f"{value:.2f}" if isinstance(value, float) else str(value)) for name, value in metrics.items()))


@dataclass(frozen=True)
class ScoreCommand:
    """`halluc score BENCH` (and `halluc.score`): files of saved outputs in, a JSON-able dict of metrics out.

    run:     the scorer; its keyword parameters (annotated Path, str, bool or int, a default where optional)
             become the command's options (`questions` -> `--questions PATH`)
    help:    one help line per parameter
    summary: the command's one-line description
    tables:  `(result, options) -> tables` for people; the default is one table of the result's scalars
    """

    run: Callable[..., dict]
    help: Mapping[str, str]
    summary: str
    tables: Callable[[dict, Mapping[str, Any]], list[ScoreTable]] | None = None

    def render(self, result: dict, options: Mapping[str, Any], title: str) -> list[ScoreTable]:
        if self.tables is not None:
            return self.tables(result, options)
        return [metric_table(title, {k: v for k, v in result.items() if not isinstance(v, (dict, list))})]


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
    companion:     `(task of corrects) -> task or None`: this benchmark scored from that task's generated texts,
                   no extra generation (RePOPE's twin of a POPE task); its samples are a subset, same ids
    compact:       metric keys a compact leaderboard (terminal, README) shows after the headline; empty: the
                   next two metrics with a direction
    tradeoff:      (x, y) metric keys the report plots against each other (CHAIR: object recall, CHAIR_I)
    data:          where its files come from (downloads with checksums, images, HF source)
    score:         `halluc score NAME` on saved outputs, or None when another benchmark's command scores it
    protocols:     the protocol names `--protocol` accepts, default first
    """

    name: str
    title: str
    headline: str
    metrics: tuple[Metric, ...]
    build: Callable[..., Any]
    summary_rows: Callable[[list[dict]], list[dict]] = lambda rows: []
    summary_split: str | None = None
    corrects: str | None = None
    companion: Callable[[Any], Any] | None = None
    compact: tuple[str, ...] = ()
    tradeoff: tuple[str, str] | None = None
    data: BenchmarkData = field(default_factory=BenchmarkData)
    score: ScoreCommand | None = None
    protocols: tuple[str, ...] = ()

    def metric(self, key: str) -> Metric:
        return next(m for m in self.metrics if m.key == key)

    @property
    def higher_is_better(self) -> bool:
        return self.metric(self.headline).better != "lower"

    def keys(self) -> list[str]:
        return [m.key for m in self.metrics]


def _complete(name: str, spec: BenchmarkSpec) -> None:
    if spec.headline not in spec.keys():
        raise ValueError(f"benchmark '{name}': headline '{spec.headline}' is not one of its metrics")
    named = [*spec.compact, *(spec.tradeoff or ())]
    if any(key not in spec.keys() for key in named):
        raise ValueError(f"benchmark '{name}': compact and tradeoff name metrics it does not have")


def builtin_folders() -> tuple[str, ...]:
    """Every benchmark folder in this package (a sub-package with a `task` module), the long-standing ones
    first in their usual order, then any other alphabetically: a new folder registers itself."""
    here = Path(__file__).parent
    found = {m.name for m in pkgutil.iter_modules([str(here)]) if m.ispkg and (here / m.name / "task.py").is_file()}
    usual = [name for name in ("pope", "repope", "chair", "mme", "amber", "hallusionbench") if name in found]
    return (*usual, *sorted(found - set(usual)))


BUILTINS = builtin_folders()
BENCHMARKS: Registry[BenchmarkSpec] = Registry("benchmark", [f"halluc.benchmarks.{b}.task" for b in BUILTINS],
                                               check=_complete)


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    return BENCHMARKS.register(spec.name, spec)


def benchmark_spec(name: str) -> BenchmarkSpec:
    return BENCHMARKS.get(name)


def benchmark_names() -> list[str]:
    return BENCHMARKS.names()


def companion_tasks(task: Any) -> list[Any]:
    """The tasks scored from `task`'s texts with other labels (RePOPE from POPE), where they apply."""
    made = (spec.companion(task) for spec in BENCHMARKS.items().values()
            if spec.corrects == task.name and spec.companion is not None)
    return [companion for companion in made if companion is not None]
