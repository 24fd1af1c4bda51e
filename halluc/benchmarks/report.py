"""Reports from run directories: the data every report format is rendered from.

`load_runs` reads run directories (`results.json`, and `config.json` for provenance); `build_report` joins
their rows into one `Report`: a row per model × method × benchmark × protocol × split, each with its
vanilla row (method `none`, same model, benchmark, protocol and split) and the paired-bootstrap 95%
intervals of its differences to it (`halluc.benchmarks.intervals`). The formats:

- per-benchmark leaderboards for the terminal and Markdown (`halluc.benchmarks.leaderboard`);
- the self-contained HTML page with plots (`halluc.benchmarks.report_html`);
- the long format for CSV and JSON (`long_rows`): one row per model × method × benchmark × split × metric.

Repeated input: a directory given twice is read once. Two runs may hold the same row (each run has its
vanilla): it is kept once when its metrics agree, and the report is refused when they differ, since one
leaderboard cannot hold two different results under one name. Costs are timings of one machine at one
time, so a method's cost is relative to the vanilla of its own run whenever that run has one. Methods
run under one label with different parameters in different runs are told apart by those parameters
(`vcd[alpha=2]`).
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from halluc.benchmarks.spec import Metric, benchmark_spec
from halluc.errors import HallucError
from halluc.version import __version__

BASELINE = "none"
REQUIRED = ("model", "method", "benchmark", "protocol", "split")
COST = (Metric("seconds_per_sample", "s/sample", "lower", unit="s",
               description="generation time per sample, after an untimed warm-up batch per configuration "
                           "(outputs taken from the cache are not timed)"),
        Metric("tokens_per_second", "tokens/s", "higher", unit="tokens/s", description="generated tokens per second"),
        Metric("peak_memory_mb", "peak memory", "lower", unit="MB",
               description="peak accelerator memory (on CPU: the process's peak resident memory)"))
LONG_COLUMNS = ("model", "revision", "benchmark", "protocol", "split", "method", "metric", "label", "unit", "better",
                "value", "vanilla", "delta", "ci_low", "ci_high", "excludes_zero", "ratio", "limit", "seed", "run")
Interval = tuple[float, float]


@dataclass(frozen=True)
class Run:
    """One run directory's results; `intervals` {(split, method label, metric key): (low, high)} when computed."""

    path: Path | None
    config: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    intervals: Mapping = field(default_factory=dict)


# ---------------------------------------------------------------- reading run directories

def distinct_run_dirs(run_dirs: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(directories to read, in order, each once; the repeated ones that were dropped)."""
    kept: dict[Path, Path] = {}
    repeated = []
    for run_dir in map(Path, run_dirs):
        if run_dir.resolve() in kept:
            repeated.append(run_dir)
        else:
            kept[run_dir.resolve()] = run_dir
    return list(kept.values()), repeated


def load_runs(run_dirs: Sequence[Path]) -> list[Run]:
    return [load_run(run_dir) for run_dir in distinct_run_dirs(run_dirs)[0]]


def load_run(run_dir: Path) -> Run:
    """A run directory's rows and configuration; any defect is one HallucError naming the file."""
    run_dir = Path(run_dir)
    results = run_dir / "results.json"
    if not results.is_file():
        raise HallucError(f"no results.json in {run_dir} (is the run finished? `halluc run --resume` completes it)")
    data = _read_json(results)
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in REQUIRED) for r in rows):
        raise HallucError(f"{results} is not a halluc results file: expected rows with {', '.join(REQUIRED)}")
    if not rows:
        raise HallucError(f"{results} holds no results")
    for row in rows:
        try:
            benchmark_spec(row["benchmark"])
        except HallucError as err:
            raise HallucError(f"{results}: {err}") from None
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    if (run_dir / "config.json").is_file():
        stored = _read_json(run_dir / "config.json")
        config = {**config, **stored} if isinstance(stored, dict) else config
    return Run(run_dir, config, rows)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise HallucError(f"{path} is corrupt: not valid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError:
        raise HallucError(f"{path} is corrupt: not UTF-8 text") from None
    except OSError as err:
        raise HallucError(f"cannot read {path}: {err.strerror}") from None


# ---------------------------------------------------------------- the joined rows

@dataclass
class Report:
    """Every row of every run, once, with vanilla rows and intervals at hand."""

    runs: list[Run]
    rows: list[dict]
    bootstrap: int = 0  # resamples behind the intervals (0: none)
    run_vanilla: dict = field(default_factory=dict)  # (group, run path) -> that run's vanilla row (timings)
    _vanilla: dict = field(init=False, repr=False)

    def __post_init__(self):
        self._vanilla = {_group(r): r for r in self.rows if r["method"] == BASELINE}

    @property
    def methods(self) -> list[str]:
        """Method labels, vanilla first, then in order of first appearance."""
        found = list(dict.fromkeys(r["method"] for r in self.rows))
        return sorted(found, key=lambda m: m != BASELINE)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r["model"] for r in self.rows))

    def benchmarks(self) -> list[tuple[str, str]]:
        """(benchmark, protocol) pairs in order of first appearance: one leaderboard each."""
        return list(dict.fromkeys((r["benchmark"], r["protocol"]) for r in self.rows))

    def vanilla(self, row: Mapping) -> dict | None:
        return self._vanilla.get(_group(row))

    def cost_vanilla(self, row: Mapping) -> dict | None:
        """The vanilla row to time `row` against: its own run's, else the joined one."""
        return self.run_vanilla.get((_group(row), row.get("run"))) or self.vanilla(row)

    def delta(self, row: Mapping, key: str) -> float | None:
        base = self.vanilla(row)
        if row["method"] == BASELINE or base is None or not number(row.get(key)) or not number(base.get(key)):
            return None
        return row[key] - base[key]


def build_report(runs: Sequence[Run], bootstrap: int = 0) -> Report:
    """Join the runs' rows: names made unambiguous, intervals attached, repeated rows kept once."""
    methods = _method_names(runs)
    models = _model_names(runs)
    kept: dict[tuple, dict] = {}
    run_vanilla: dict[tuple, dict] = {}
    for index, run in enumerate(runs):
        for row in run.rows:
            label = row["method"]
            intervals = {metric: tuple(ci) for (split, name, metric), ci in run.intervals.items()
                         if split == row["split"] and name == label}
            joined = {**row, "model": models[(row["model"], row.get("revision"))],
                      "method": methods[(index, label)], "run": str(run.path) if run.path else None,
                      "intervals": intervals}
            key = _identity(joined)
            if label == BASELINE:
                run_vanilla[(_group(joined), joined["run"])] = joined
            if key in kept:
                _check_same(kept[key], joined)
            else:
                kept[key] = joined
    return Report(list(runs), list(kept.values()), bootstrap, run_vanilla)


def report_from_rows(rows: Sequence[dict]) -> Report:
    """A report of result rows alone (what `halluc run` just scored): no provenance, no intervals."""
    return build_report([Run(None, {}, list(rows))])


def _group(row: Mapping) -> tuple:
    return row["model"], row["benchmark"], row["protocol"], row["split"]


def _identity(row: Mapping) -> tuple:
    return (*_group(row), row["method"])


def _check_same(first: Mapping, second: Mapping) -> None:
    spec = benchmark_spec(first["benchmark"])
    for metric in spec.metrics:
        if first.get(metric.key) != second.get(metric.key):
            raise HallucError(
                f"{first['run']} and {second['run']} both hold {first['method']} on {first['model']} "
                f"{first['benchmark']} {first['protocol']} {first['split']}, with different results "
                f"({metric.label} {first.get(metric.key)} vs {second.get(metric.key)}): report them separately")


def _method_names(runs: Sequence[Run]) -> dict[tuple[int, str], str]:
    """{(run index, label): name}: the label, or label[param=value, ...] when it ran with several parameter sets."""
    params: dict[tuple[int, str], dict] = {}
    for index, run in enumerate(runs):
        for row in run.rows:
            params.setdefault((index, row["method"]), _flat(row.get("params") or {}))
    variants: dict[str, list[dict]] = {}
    for (_, label), flat in params.items():
        if flat not in variants.setdefault(label, []):
            variants[label].append(flat)
    names = {}
    for (index, label), flat in params.items():
        if len(variants[label]) == 1:
            names[(index, label)] = label
        else:
            differing = [k for k in flat if any(v.get(k) != flat[k] for v in variants[label])]
            names[(index, label)] = f"{label}[{', '.join(f'{k}={flat[k]}' for k in differing)}]"
    return names


def _flat(params: Mapping) -> dict:
    """{"vcd": {"alpha": 1}} -> {"alpha": 1}; stacked methods keep their prefix ("vcd.alpha")."""
    prefix = len(params) > 1
    return {(f"{m}.{k}" if prefix else k): json.dumps(v, default=str) if isinstance(v, (list, dict)) else v
            for m, values in params.items() if isinstance(values, Mapping) for k, v in values.items()}


def _model_names(runs: Sequence[Run]) -> dict[tuple[str, str | None], str]:
    """The model name, with @revision when one model appears at several revisions."""
    pairs = list(dict.fromkeys((r["model"], r.get("revision")) for run in runs for r in run.rows))
    names = {}
    for model, revision in pairs:
        several = sum(1 for m, _ in pairs if m == model) > 1
        names[(model, revision)] = f"{model}@{str(revision)[:8]}" if several else model
    return names


def number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def excludes_zero(interval: Interval | None) -> bool:
    return interval is not None and (interval[0] > 0 or interval[1] < 0)


# ---------------------------------------------------------------- long format: CSV, JSON, Markdown's full data

def long_rows(report: Report) -> list[dict]:
    """One row per model × method × benchmark × split × metric (and cost measure), with delta and interval."""
    out = []
    for row in report.rows:
        base, timed = report.vanilla(row) or {}, report.cost_vanilla(row) or {}
        for metric in (*benchmark_spec(row["benchmark"]).metrics, *COST):
            value = row.get(metric.key)
            if not number(value):
                continue
            cost = metric in COST
            reference = (timed if cost else base).get(metric.key)
            ci = row["intervals"].get(metric.key)
            out.append({
                **{k: row.get(k) for k in ("model", "revision", "benchmark", "protocol", "split", "method")},
                "metric": metric.key, "label": metric.label, "unit": metric.unit, "better": metric.better,
                "value": value, "vanilla": reference if number(reference) else None,
                "delta": report.delta(row, metric.key), "ci_low": ci[0] if ci else None,
                "ci_high": ci[1] if ci else None, "excludes_zero": excludes_zero(ci) if ci else None,
                "ratio": value / reference if cost and number(reference) and reference else None,
                "limit": row.get("limit"), "seed": row.get("seed"), "run": row.get("run")})
    return out


def render_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LONG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(long_rows(report))
    return buffer.getvalue()


def render_json(report: Report) -> str:
    data = {"halluc": __version__, "bootstrap": report.bootstrap, "columns": list(LONG_COLUMNS),
            "runs": [{"path": str(run.path) if run.path else None, "config": run.config} for run in report.runs],
            "rows": long_rows(report)}
    return json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n"


# ---------------------------------------------------------------- text leaderboards and files

def render_terminal(rows: Report | Sequence[dict], wide: bool = False) -> str:
    """One table per benchmark, at most 100 columns wide (`wide`: every column and interval)."""
    from halluc.benchmarks.leaderboard import terminal

    return terminal(rows if isinstance(rows, Report) else report_from_rows(rows), wide=wide)


def render_markdown(report: Report) -> str:
    from halluc.benchmarks.leaderboard import markdown

    return markdown(report)


def write_report(report: Report, out: Path) -> dict[str, Path]:
    """Write leaderboard.{md,csv,json,html} into `out`, all or nothing; return the paths."""
    from halluc.benchmarks.report_html import render_html

    contents = {"md": render_markdown(report), "csv": render_csv(report), "json": render_json(report),
                "html": render_html(report)}
    return write_files(Path(out), {f"leaderboard.{kind}": text for kind, text in contents.items()})


def write_files(out: Path, contents: Mapping[str, str]) -> dict[str, Path]:
    """Every file written to a temporary name first, then renamed: a failure leaves no partial report."""
    if out.exists() and not out.is_dir():
        raise HallucError(f"--out {out} is a file: give a directory for the report")
    created = not out.exists()
    temporary: dict[Path, Path] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in contents.items():
            tmp = out / f".{name}.tmp{os.getpid()}"
            temporary[tmp] = out / name
            tmp.write_text(text, encoding="utf-8")
        for tmp, final in temporary.items():
            os.replace(tmp, final)
    except OSError as err:
        for tmp in temporary:
            tmp.unlink(missing_ok=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise HallucError(f"cannot write the report to {out}: {err.strerror or err}") from None
    return {Path(name).suffix.lstrip("."): out / name for name in contents}


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
