"""Leaderboards from run directories: terminal table, markdown, CSV, JSON and a self-contained HTML page.

Deltas are against the vanilla (`none`) row of the same model, benchmark, protocol and split, with
paired bootstrap 95% intervals: the same resampled samples are scored for both rows with the
benchmark's official aggregate, so the interval reflects sample noise only.
"""
from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Sequence
from pathlib import Path

from halluc.benchmarks.spec import benchmark_spec
from halluc.benchmarks.store import write_json_atomic
from halluc.errors import HallucError

COST = ("seconds_per_sample", "tokens_per_second", "peak_memory_mb")


def load_rows(run_dirs: Sequence[Path]) -> list[dict]:
    rows = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "results.json"
        if not path.exists():
            raise HallucError(f"no results.json in {run_dir} (is the run finished? `halluc run --resume` completes it)")
        data = json.loads(path.read_text(encoding="utf-8"))
        rows += [{**row, "run": str(run_dir)} for row in data["rows"]]
    return rows


def add_deltas(rows: list[dict], intervals: dict | None = None) -> list[dict]:
    """`delta_<headline>` against the vanilla row of the same model/benchmark/protocol/split (+ CI if known)."""
    vanilla = {_group(r): r for r in rows if r["method"] == "none"}
    out = []
    for row in rows:
        metric = benchmark_spec(row["benchmark"]).headline
        base = vanilla.get(_group(row))
        extra = {}
        if base is not None and row["method"] != "none" and row.get(metric) is not None:
            extra[f"delta_{metric}"] = row[metric] - base[metric]
            ci = (intervals or {}).get((_group(row), row["method"]))
            if ci:
                extra[f"delta_{metric}_ci"] = ci
        out.append({**row, **extra})
    return out


def _group(row: dict) -> tuple:
    return row["model"], row["benchmark"], row["protocol"], row["split"]


def paired_bootstrap(units_a: Sequence, units_b: Sequence, aggregate, metric: str, n: int = 1000,
                     seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of metric(b) − metric(a) over resamples of aligned units."""
    if len(units_a) != len(units_b) or not units_a:
        raise ValueError("paired bootstrap needs two aligned, non-empty unit lists")
    rng = random.Random(seed)
    size = len(units_a)
    deltas = []
    for _ in range(n):
        idx = [rng.randrange(size) for _ in range(size)]
        deltas.append(aggregate([units_b[i] for i in idx])[metric] - aggregate([units_a[i] for i in idx])[metric])
    deltas.sort()
    return deltas[int(0.025 * (n - 1))], deltas[int(0.975 * (n - 1))]


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"[{value[0]:+.2f}, {value[1]:+.2f}]"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(rows: list[dict], compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and cells of one leaderboard over possibly mixed benchmarks (compact: for terminals)."""
    metrics = []
    for bench in dict.fromkeys(r["benchmark"] for r in rows):
        spec = benchmark_spec(bench)
        head = spec.headline
        metrics += [c for c in spec.keys() if c not in metrics] + [f"delta_{head}", f"delta_{head}_ci"]
    metrics = [m for m in dict.fromkeys(metrics) if any(m in r for r in rows)]
    header = ["model", "benchmark", "protocol", "split", "method", *metrics, *COST]
    if compact:
        drop = {"model", "protocol", "n", "precision", "peak_memory_mb", "tokens_per_second"}
        header = [h for h in header if h not in drop]
    return header, [[_fmt(r.get(c)) for c in header] for r in rows]


def render_terminal(rows: list[dict], intervals: dict | None = None) -> str:
    from rich.console import Console
    from rich.table import Table

    header, cells = table(add_deltas(rows, intervals), compact=True)
    models = ", ".join(dict.fromkeys(f"{r['model']} ({r['protocol']})" for r in rows))
    t = Table(title=f"halluc leaderboard: {models}")
    for name in header:
        t.add_column(name.replace("_", " "), no_wrap=True)
    for line in cells:
        t.add_row(*line)
    buffer = io.StringIO()
    width = sum(max(len(h), *(len(c[i]) for c in cells)) + 3 for i, h in enumerate(header)) + 2 if cells else 80
    Console(file=buffer, width=width, force_terminal=False).print(t)
    return buffer.getvalue().rstrip()


def render_markdown(rows: list[dict]) -> str:
    header, cells = table(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells]) + "\n"


def render_csv(rows: list[dict]) -> str:
    header, cells = table(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(cells)
    return buffer.getvalue()


def write_report(rows: list[dict], out: Path, intervals: dict | None = None) -> dict[str, Path]:
    """Write leaderboard.{md,csv,json,html} into `out`; return the paths."""
    from halluc.benchmarks.report_html import render_html

    rows = add_deltas(rows, intervals)
    out.mkdir(parents=True, exist_ok=True)
    paths = {kind: out / f"leaderboard.{kind}" for kind in ("md", "csv", "json", "html")}
    paths["md"].write_text(render_markdown(rows), encoding="utf-8")
    paths["csv"].write_text(render_csv(rows), encoding="utf-8")
    write_json_atomic(paths["json"], rows)
    paths["html"].write_text(render_html(rows), encoding="utf-8")
    return paths
