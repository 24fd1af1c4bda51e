"""Run directories with made-up but well-formed results, for report tests that need no model.

Values come from each benchmark's spec (every metric, summary rows by the spec's own `summary_rows`), so
these runs look like real ones to the report; `intervals` are made up around the true differences.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from halluc.benchmarks.spec import benchmark_spec
from halluc.reports.model import Run

SPLITS = {"pope": ("random", "popular", "adversarial"), "chair": ("val",)}


def fake_rows(model: str, benchmark: str, methods: tuple[str, ...], protocol: str = "llava",
              revision: str = "rev1", seed: int = 0, splits: tuple[str, ...] | None = None) -> list[dict]:
    spec = benchmark_spec(benchmark)
    rng = random.Random(f"{model}-{benchmark}-{seed}")
    rows = []
    for position, method in enumerate(methods):
        for split in splits or SPLITS[benchmark]:
            metrics = {}
            for metric in spec.metrics:
                if metric.key == "n":
                    metrics["n"] = 50
                elif metric.unit == "" and metric.better != "higher":
                    metrics[metric.key] = 0  # counts such as unparsed answers
                else:
                    metrics[metric.key] = round(rng.uniform(20.0, 90.0), 3)
            rows.append({"model": model, "revision": revision, "method": method, "params": {method: {"alpha": 1.0}},
                         "benchmark": benchmark, "split": split, "protocol": protocol, "task_version": "1", "seed": 0,
                         "limit": None, **metrics, "seconds_per_sample": 0.02 * (1 + position),
                         "tokens_per_second": 400.0 / (1 + position), "peak_memory_mb": 512.0})
    return rows + spec.summary_rows(rows)


def fake_intervals(rows: list[dict], width: float = 1.5) -> dict:
    """{(split, method, metric): (low, high)}: the true difference to vanilla ± `width`."""
    vanilla = {(r["split"]): r for r in rows if r["method"] == "none"}
    intervals = {}
    for row in rows:
        if row["method"] == "none":
            continue
        for key, value in row.items():
            base = vanilla[row["split"]].get(key)
            if isinstance(value, float) and isinstance(base, (int, float)) and key not in ("seconds_per_sample",):
                intervals[(row["split"], row["method"], key)] = (value - base - width, value - base + width)
    return intervals


def write_run(directory: Path, rows: list[dict]) -> Path:
    """A run directory as `halluc run` leaves it: results.json and config.json with provenance."""
    directory.mkdir(parents=True, exist_ok=True)
    first = rows[0]
    config = {"model": first["model"], "benchmark": first["benchmark"], "protocol": first["protocol"],
              "methods": [{"label": m, "key": f"{m}-0", "params": {m: {}}} for m in dict.fromkeys(r["method"]
                                                                                               for r in rows)],
              "limit": None, "seed": 0, "options": {},
              "provenance": {"versions": {"halluc": "0.1.0", "torch": "2.13.0"}, "commit": "0123456789abcdef",
                             "device": "cpu (test)", "date": "2025-01-02T03:04:05+00:00", "command": "halluc run"}}
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (directory / "results.json").write_text(json.dumps({"config": config, "rows": rows}), encoding="utf-8")
    return directory


def fake_run(directory: Path | None, model: str, benchmark: str, methods: tuple[str, ...], **kwargs) -> Run:
    rows = fake_rows(model, benchmark, methods, **kwargs)
    if directory is not None:
        write_run(directory, rows)
    return Run(directory, {"provenance": {"versions": {"halluc": "0.1.0"}, "date": "2025-01-02"}}, rows,
               fake_intervals(rows))
