"""Reports from run directories: the data every report format is rendered from.

`load_runs` reads run directories (`results.json`, and `config.json` for provenance); `build_report` joins
their rows into one `Report`: a row per model × method × benchmark × protocol × split, each with its
vanilla row (method `none`, same model, benchmark, protocol and split) and the paired-bootstrap 95%
intervals of its differences to it (`halluc.evaluation.intervals`). The formats:

- per-benchmark leaderboards for the terminal and Markdown (`halluc.reports.leaderboard`);
- the self-contained HTML page with plots (`halluc.reports.html`);
- the long format for CSV and JSON (`long_rows`): one row per model × method × benchmark × split × metric.

Repeated input: a directory given twice is read once. Two runs may hold the same row (each run has its
vanilla): it is kept once when its metrics agree, and the report is refused when they differ, since one
leaderboard cannot hold two different results under one name. Runs whose rows share a leaderboard (same
model, revision, benchmark and protocol) must be the same run apart from their methods: their identities
(`halluc.evaluation.identity`: weights, dtype, data files, splits, limit, seed, ...) are compared, and a
difference is refused naming the fields, since a delta against another run's vanilla would mix them.
Costs are timings of one machine at one time, so a method's cost is relative to the vanilla of its own
run whenever that run has one. Methods run under one label with different parameters in different runs
are told apart by those parameters (`vcd[alpha=2]`).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

from halluc.benchmarks.spec import Metric, benchmark_spec
from halluc.errors import HallucError
from halluc.evaluation.identity import FIELDS, describe_differences, differences, stored_identity

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
    """One run directory's results; `intervals` {(split, method label, metric key): (low, high)} when computed;
    `gain` the rows of `halluc.evaluation.gain.run_gain` (threshold-free metrics, frontier, flips) when computed."""

    path: Path | None
    config: dict = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    intervals: Mapping = field(default_factory=dict)
    gain: list = field(default_factory=list)


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
    for i, row in enumerate(rows):
        _check_row(row, f"{results}: row {i + 1}")
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    if (run_dir / "config.json").is_file():
        stored = _read_json(run_dir / "config.json")
        config = {**config, **stored} if isinstance(stored, dict) else config
    return Run(run_dir, config, rows)


# fields of a result row beside the metrics, and the JSON types each may hold
_ROW_FIELDS = {"revision": (str, type(None)), "task_version": (str, int, type(None)), "seed": (int, type(None)),
               "limit": (int, type(None)), "params": (dict, type(None)), "label": (str, type(None)),
               "extractor": (str, type(None))}


def _check_row(row: dict, where: str) -> None:
    """A results.json row as halluc writes it: names are strings, metrics and costs numbers (or null), the other
    fields of their types; anything else (a list for a name, a string for F1, `true` for a seed) is one line."""
    for key in REQUIRED:
        if not isinstance(row[key], str):
            raise HallucError(f"{where}: '{key}' must be a string, got {json.dumps(row[key])}")
    try:
        spec = benchmark_spec(row["benchmark"])
    except HallucError as err:
        raise HallucError(f"{where}: {err}") from None
    for metric in (*spec.metrics, *COST):
        value = row.get(metric.key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise HallucError(f"{where}: '{metric.key}' must be a number, got {json.dumps(value)}")
    for key, types in _ROW_FIELDS.items():
        value = row.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            raise HallucError(f"{where}: '{key}' must be {' or '.join(t.__name__ for t in types)}, got "
                              f"{json.dumps(value)}")


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
    gain: list = field(default_factory=list)  # "Is the gain real?" rows of every run, names as in `rows`
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
    check_same_runs(runs)
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
                      "intervals": intervals, "sampled": _sampled(run)}
            key = _identity(joined)
            if label == BASELINE:
                run_vanilla[(_group(joined), joined["run"])] = joined
            if key in kept:
                _check_same(kept[key], joined)
            else:
                kept[key] = joined
    gain = [{**g, "model": models[(g["model"], _revision(run))], "method": methods[(index, g["method"])],
             "run": str(run.path) if run.path else None, "seed": run.config.get("seed"), "sampled": _sampled(run)}
            for index, run in enumerate(runs) for g in run.gain if (index, g["method"]) in methods]
    rows = merge_seeds(list(kept.values()))
    check_matched_decoding(rows)
    return Report(list(runs), rows, bootstrap, run_vanilla, merge_seeds(gain, gain=True))


def _sampled(run: Run) -> bool:
    return bool((run.config.get("decoding") or {}).get("do_sample"))


def check_matched_decoding(rows: Sequence[dict]) -> None:
    """A delta compares like with like: a sampled method against sampled vanilla with the same seeds, a greedy
    (or beam) one against greedy vanilla. Anything else is refused in one line."""
    vanilla = {_group(r): r for r in rows if r["method"] == BASELINE}
    for row in rows:
        base = vanilla.get(_group(row))
        if row["method"] == BASELINE or base is None:
            continue
        where = f"{row['method']} on {row['model']} {row['benchmark']} {row['protocol']} {row['split']}"
        if bool(row.get("sampled")) != bool(base.get("sampled")):
            mode, other = ("sampled", "greedy") if row.get("sampled") else ("greedy", "sampled")
            raise HallucError(f"{where} was {mode} but its vanilla was {other}: a delta needs the same decoding "
                              "(run vanilla with the same protocol)")
        if row.get("sampled") and _seeds(row) != _seeds(base):
            raise HallucError(f"{where} was sampled with seeds {_seeds(row)} but its vanilla with {_seeds(base)}: a "
                              "delta needs the same seeds")


def _seeds(row: Mapping) -> list:
    return list(row.get("seeds") or [row.get("seed")])


def merge_seeds(rows: list[dict], gain: bool = False) -> list[dict]:
    """Sampled rows of one model × method × benchmark × protocol × split run with several seeds (`halluc run
    --seeds N`) become one row: each number the mean over seeds, `seed_sd` their standard deviations, `seeds`
    the seeds, and each interval the 95% t-interval over seeds of the per-seed difference to vanilla (for the
    gain rows: of the per-seed statistic)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((*_group(row), row["method"]), []).append(row)
    if all(len(g) == 1 for g in groups.values()):
        return rows
    vanilla = {key[:-1]: {r.get("seed"): r for r in group} for key, group in groups.items() if key[-1] == BASELINE}
    out = []
    for key, group in groups.items():
        if len(group) == 1:
            out.append(group[0])
            continue
        numbers = [k for k, v in group[0].items() if number(v) and k not in ("seed", "limit")]
        merged = {**group[0], "seeds": [r.get("seed") for r in group], "seed": None}
        merged.update({k: _mean([r.get(k) for r in group]) for k in numbers})
        merged["seed_sd"] = {k: _sd([r.get(k) for r in group]) for k in numbers}
        if gain:
            merged["intervals"] = {k: _t_interval([r.get(k) for r in group]) for k in group[0].get("intervals", {})}
            merged.pop("frontier", None) if key[-1] != BASELINE else None
        elif key[-1] != BASELINE:
            bases = vanilla.get(key[:-1], {})
            merged["intervals"] = {k: _t_interval([r[k] - bases[r.get("seed")][k] for r in group
                                                   if number(bases.get(r.get("seed"), {}).get(k))])
                                   for k in numbers}
        out.append(merged)
    if gain:
        from halluc.evaluation.gain import verdict

        for row in out:
            if "seeds" in row and "delta_f1" in row:
                row["verdict"], row["reason"] = verdict(row, row["intervals"])
    return out


def _mean(values: Sequence) -> float | None:
    kept = [v for v in values if number(v)]
    return sum(kept) / len(kept) if kept else None


def _sd(values: Sequence) -> float | None:
    kept = [v for v in values if number(v)]
    if len(kept) < 2:
        return None
    mean = sum(kept) / len(kept)
    return (sum((v - mean) ** 2 for v in kept) / (len(kept) - 1)) ** 0.5


def _t_interval(values: Sequence) -> tuple[float, float] | None:
    """The 95% t-interval of the mean of `values` (scipy's Student t quantile), None with fewer than two."""
    from scipy.stats import t

    kept = [v for v in values if number(v)]
    if len(kept) < 2:
        return None
    mean, sd = sum(kept) / len(kept), _sd(kept)
    assert sd is not None  # two values or more
    half = float(t.ppf(0.975, len(kept) - 1)) * sd / len(kept) ** 0.5
    return mean - half, mean + half


def _revision(run: Run) -> str | None:
    return next((r.get("revision") for r in run.rows), None)


def check_same_runs(runs: Sequence[Run]) -> None:
    """Runs that share a leaderboard must have one identity apart from their methods (runs written before
    run identities, which have none, are not compared)."""
    fields = [f for f in FIELDS if f != "methods"]
    seen: dict[tuple, tuple[Run, dict]] = {}
    for run in runs:
        identity = stored_identity(run.config)
        if identity is None:
            continue
        for group in dict.fromkeys((r["model"], r.get("revision"), r["benchmark"], r["protocol"]) for r in run.rows):
            if group not in seen:
                seen[group] = (run, identity)
                continue
            other, theirs = seen[group]
            differing = differences(theirs, identity, fields)
            if differing:
                raise HallucError(f"{other.path} and {run.path} both hold {group[0]} on {group[2]} {group[3]} but are "
                                  f"not the same run: {describe_differences(theirs, identity, differing)} differ; "
                                  "report them separately")


def report_from_rows(rows: Sequence[dict]) -> Report:
    """A report of result rows alone (what `halluc run` just scored): no provenance, no intervals."""
    return build_report([Run(None, {}, list(rows))])


def _group(row: Mapping) -> tuple:
    return row["model"], row["benchmark"], row["protocol"], row["split"]


def _identity(row: Mapping) -> tuple:
    """A row's place in the report: a sampled row of another seed is another row (merged by `merge_seeds`)."""
    return (*_group(row), row["method"], row.get("seed") if row.get("sampled") else None)


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


def number(value: object) -> TypeGuard[float]:
    """An int or a float, not a bool (True is an int to Python, never a score here)."""
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


def gain_long_rows(report: Report) -> list[dict]:
    """The "Is the gain real?" statistics in the long format: one row per model × method × benchmark × split ×
    statistic (metric `gain:<name>`), and one per method and split for its verdict (value) and reason (label)."""
    from halluc.evaluation.gain import GAIN_LABELS  # the analysis module reads samples: torch, only when asked

    out = []
    for row in report.gain:
        base = {"model": row["model"], "revision": None, "benchmark": row["benchmark"], "protocol": row["protocol"],
                "split": row["split"], "method": row["method"], "vanilla": None, "delta": None, "ratio": None,
                "limit": None, "seed": None, "run": row.get("run")}
        for key, (label, unit, better) in GAIN_LABELS.items():
            if not number(row.get(key)):
                continue
            ci = row.get("intervals", {}).get(key)
            out.append({**base, "metric": f"gain:{key}", "label": label, "unit": unit, "better": better,
                        "value": row[key], "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
                        "excludes_zero": excludes_zero(tuple(ci)) if ci else None})
        if row.get("verdict") is not None and "delta_f1" in row:
            out.append({**base, "metric": "gain:verdict", "label": row.get("reason", ""), "unit": "", "better": None,
                        "value": row.get("verdict", ""), "ci_low": None, "ci_high": None, "excludes_zero": None})
    return out
