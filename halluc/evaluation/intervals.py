"""Paired bootstrap 95% intervals for a run: rebuild its task from config.json, resample aligned units.

Each resample draws the same samples for vanilla and for every method (paired), so an interval reflects
sample noise only. All splits are drawn in the same resample, so the summary rows (POPE's mean over
splits, MME's totals) get intervals too: the benchmark's own `summary_rows` recomputes them from the
resampled splits. Every metric gets an interval, with the benchmark's official aggregate.
"""
from __future__ import annotations

import operator
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from halluc.benchmarks.build import build_task
from halluc.benchmarks.spec import benchmark_spec
from halluc.errors import HallucError
from halluc.evaluation.run import read_outputs
from halluc.limits import MAX_BOOTSTRAP, check_number

BASELINE = "none"
Interval = tuple[float, float]


def check_bootstrap(n: int) -> None:
    """The number of resamples: an integer in [0, MAX_BOOTSTRAP] (each resample re-scores every method)."""
    check_number("--bootstrap", n, integer=True, low=0, high=MAX_BOOTSTRAP)


def run_intervals(run_dir: Path, config: Mapping, n: int = 1000, seed: int = 0) -> dict[tuple[str, str, str], Interval]:
    """{(split, method label, metric key): (low, high)} of metric(method) − metric(vanilla), for every
    non-vanilla method of the run in `run_dir` (described by its `config`); {} when there is no vanilla
    or the benchmark files are gone."""
    check_bootstrap(n)
    labels = {m["label"]: m["key"] for m in config.get("methods", [])}
    if BASELINE not in labels or len(labels) < 2 or n < 1:
        return {}
    try:
        task = task_from_config(config)
    except HallucError:
        return {}  # benchmark files moved: report without intervals rather than fail
    units = {}
    for split in task.splits():
        samples = task.samples(split)[: config.get("limit")]
        if samples:
            units[split] = {label: task.units(split, samples, _texts(run_dir, key, split, samples))
                            for label, key in labels.items()}
    return paired_intervals(units, task.aggregate, benchmark_spec(config["benchmark"]).summary_rows, n, seed)


def paired_intervals(units: Mapping[str, Mapping[str, Sequence]], aggregate: Callable[[str, Sequence], dict],
                     summary_rows: Callable[[list[dict]], list[dict]], n: int = 1000,
                     seed: int = 0) -> dict[tuple[str, str, str], Interval]:
    """95% percentile intervals of every metric's difference to the baseline, per split and summary split.

    units: {split: {method label: aligned units}}, the baseline (`none`) among the labels.
    """
    rng = random.Random(seed)
    deltas: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for _ in range(n):
        picks = {split: [rng.randrange(len(by_label[BASELINE])) for _ in by_label[BASELINE]]
                 for split, by_label in units.items()}
        rows = _resampled_rows(units, picks, aggregate, summary_rows)
        baseline = {row["split"]: row for row in rows[BASELINE]}
        for label, label_rows in rows.items():
            if label != BASELINE:
                for row in label_rows:
                    for key, delta in _differences(row, baseline.get(row["split"], {})).items():
                        deltas[(row["split"], label, key)].append(delta)
    return {key: percentile_interval(values) for key, values in deltas.items()}


def _resampled_rows(units, picks, aggregate, summary_rows) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = defaultdict(list)
    for split, by_label in units.items():
        chosen = picks[split]
        take = operator.itemgetter(*chosen) if len(chosen) > 1 else (lambda seq: [seq[i] for i in chosen])
        for label, label_units in by_label.items():
            metrics = aggregate(split, list(take(label_units)))
            rows[label].append({**metrics, "method": label, "split": split})
    for label_rows in rows.values():
        label_rows += summary_rows(list(label_rows))
    return rows


def _differences(row: Mapping, baseline: Mapping) -> dict[str, float]:
    return {key: value - baseline[key] for key, value in row.items()
            if _number(value) and _number(baseline.get(key))}


def percentile_interval(values: Sequence[float]) -> Interval:
    ordered = sorted(values)
    last = len(ordered) - 1
    return ordered[int(0.025 * last)], ordered[int(0.975 * last)]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _texts(run_dir: Path, key: str, split: str, samples) -> dict:
    outputs = read_outputs(Path(run_dir), key, split)
    return {s.id: outputs[s.id]["text"] if s.id in outputs else None for s in samples}


def task_from_config(config: Mapping):
    """The task a run was made with, rebuilt from its recorded config (`halluc report`'s intervals and gain)."""
    options = config.get("options", {})
    return build_task(config["benchmark"], protocol=config["protocol"], splits=options.get("splits"),
                      data=_path(options.get("data")), images=_path(options.get("images")),
                      max_new_tokens=options.get("max_new_tokens"), dataset=options.get("dataset", "coco"),
                      source=options.get("source", "auto"))  # a run on the HF copy rebuilds from it, not local files


def _path(value):
    return Path(value) if value else None
