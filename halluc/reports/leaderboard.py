"""Per-benchmark leaderboards in a format-neutral form, and their terminal and Markdown renderings.

One leaderboard per benchmark and protocol, a row per model × method, sorted by the headline metric at the
benchmark's main split (its summary row, such as POPE's mean or MME's perception total, or its only split).
Every column comes from the benchmark's spec, so a benchmark added later needs no change here:

    # · model (with several) · method · headline · Δ headline vs vanilla [95% interval] · headline per split
    (POPE's splits; MME's other totals) · the other metrics at the main split · cost: s/sample and tokens/s
    relative to vanilla · rank change (a benchmark that relabels another's questions: RePOPE vs POPE)

The best value of each column is marked, as is a delta whose paired-bootstrap interval excludes 0.
Metrics without a value in any row are left out; a metric equal in every row moves to the notes.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from halluc.benchmarks.spec import BenchmarkSpec, Metric, benchmark_spec
from halluc.reports.model import BASELINE, COST, LONG_COLUMNS, Report, excludes_zero, long_rows, number

MAX_SPLIT_COLUMNS = 6      # more splits than this (MME's 14 subtasks) are left to the plots and the long format
TERMINAL_WIDTH = 100
DASH = "–"


def method_name(label: str) -> str:
    return "vanilla" if label == BASELINE else label


@dataclass(frozen=True)
class Column:
    key: str                      # "rank", "model", "method", "f1@mean", "delta:f1@mean", "cost:seconds_per_sample"
    label: str                    # header text
    split: str = ""               # second header line: the split, when the column is about one
    unit: str = ""
    better: str | None = None     # "higher" / "lower": which value is best, and the first click's sort order
    reference: float | None = None  # best is closest to this (yes ratio: 50) when `better` is None
    description: str = ""
    numeric: bool = True
    compact: bool = False         # shown in the terminal leaderboard


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | str | None = None   # the sort key
    detail: str = ""                   # the interval of a delta; a cost relative to vanilla
    best: bool = False
    significant: bool = False          # a delta whose 95% interval excludes 0
    improves: bool | None = None       # its direction, by the metric's `better`


@dataclass
class Leaderboard:
    title: str
    benchmark: str
    protocol: str
    main_split: str
    columns: list[Column]
    rows: list[list[Cell]]
    methods: list[str] = field(default_factory=list)   # each row's method label (for colours)
    models: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sorted_by: str = ""                                  # the key of the column the rows are sorted by

    @property
    def anchor(self) -> str:
        return f"{self.benchmark}-{self.protocol}".replace(" ", "-")

    def select(self, keep: Callable[[Column], bool]) -> Leaderboard:
        index = [i for i, c in enumerate(self.columns) if keep(c)]
        return replace(self, columns=[self.columns[i] for i in index], rows=[[r[i] for i in index] for r in self.rows])


@dataclass
class Layout:
    """Which split is the headline's, and which splits get a headline column of their own."""

    main: str
    splits: list[str]            # the per-sample splits (POPE random, popular, adversarial)
    split_columns: list[str]

    @classmethod
    def of(cls, spec: BenchmarkSpec, rows: Sequence[dict]) -> Layout:
        present = list(dict.fromkeys(r["split"] for r in rows))
        one_entry = [r for r in rows if (r["model"], r["method"]) == (rows[0]["model"], rows[0]["method"])]
        summary = [s for s in dict.fromkeys(r["split"] for r in spec.summary_rows(one_entry)) if s in present]
        splits = [s for s in present if s not in summary]
        chosen = spec.summary_split
        main = chosen if chosen is not None and chosen in present else (summary or present)[0]
        others = [s for s in summary if s != main] or [s for s in splits if s != main]
        return cls(main, splits, others if len(others) <= MAX_SPLIT_COLUMNS else [])


@dataclass
class Entry:
    """One leaderboard row's data: a model × method, its rows by split, vanilla's, and the vanilla rows
    of its own run (what its timings compare with)."""

    model: str
    method: str
    rows: dict[str, dict]
    vanilla: dict[str, dict]
    timed_vanilla: dict[str, dict]

    def value(self, key: str, split: str):
        value = self.rows.get(split, {}).get(key)
        return value if number(value) else None


# ---------------------------------------------------------------- building

def leaderboards(report: Report) -> list[Leaderboard]:
    return [leaderboard(report, benchmark, protocol) for benchmark, protocol in report.benchmarks()]


def leaderboard(report: Report, benchmark: str, protocol: str) -> Leaderboard:
    spec = benchmark_spec(benchmark)
    rows = [r for r in report.rows if r["benchmark"] == benchmark and r["protocol"] == protocol]
    layout = Layout.of(spec, rows)
    entries = _sorted(spec, layout, _entries(report, rows))
    builders = _columns(report, spec, layout, entries)
    columns = [c for c, _ in builders]
    cells = [[build(entry) for _, build in builders] for entry in entries]
    columns, cells, notes = _move_constant_columns(columns, cells)
    return Leaderboard(f"{spec.title} · {protocol}", benchmark, protocol, layout.main, columns,
                       _mark_best(columns, cells), [e.method for e in entries], [e.model for e in entries], notes,
                       sorted_by=f"{spec.headline}@{layout.main}")


def _entries(report: Report, rows: Sequence[dict]) -> list[Entry]:
    entries: dict[tuple[str, str], Entry] = {}
    for row in rows:
        key = (row["model"], row["method"])
        if key not in entries:
            entries[key] = Entry(row["model"], row["method"], {}, {}, {})
        entries[key].rows[row["split"]] = row
        entries[key].vanilla[row["split"]] = report.vanilla(row) or {}
        entries[key].timed_vanilla[row["split"]] = report.cost_vanilla(row) or {}
    return list(entries.values())


def _sorted(spec: BenchmarkSpec, layout: Layout, entries: list[Entry]) -> list[Entry]:
    sign = -1 if spec.higher_is_better else 1

    def key(item):
        position, entry = item
        value = entry.value(spec.headline, layout.main)
        return value is None, sign * value if value is not None else 0, position

    return [e for _, e in sorted(enumerate(entries), key=key)]


def _columns(report: Report, spec: BenchmarkSpec, layout: Layout,
             entries: list[Entry]) -> list[tuple[Column, Callable]]:
    headline = spec.metric(spec.headline)
    several_splits = len(layout.splits) + len(layout.split_columns) > 1
    main_label = layout.main if several_splits else ""
    ranks = {id(e): i + 1 for i, e in enumerate(entries)}
    columns = [(Column("rank", "#", description="rank by the headline metric"),
                lambda e: Cell(str(ranks[id(e)]), ranks[id(e)]))]
    if len({e.model for e in entries}) > 1:
        columns.append((Column("model", "model", numeric=False, compact=True), lambda e: Cell(e.model, e.model)))
    columns.append((Column("method", "method", numeric=False, compact=True),
                    lambda e: Cell(method_name(e.method), method_name(e.method))))
    columns.append(_metric_column(headline, layout.main, main_label, compact=True))
    columns.append(_delta_column(headline, layout.main, main_label))
    columns += _gain_column(report, spec)
    columns += [_metric_column(headline, split, split, compact=len(layout.split_columns) <= 3)
                for split in layout.split_columns]
    compact = spec.compact or tuple(m.key for m in spec.metrics if m.key != spec.headline and m.better)[:2]
    others = sorted((m for m in spec.metrics if m.key != spec.headline), key=lambda m: m.key not in compact)
    columns += [_metric_column(m, layout.main, "", compact=m.key in compact) for m in others
                if any(e.value(m.key, layout.main) is not None for e in entries)]
    columns += [_cost_column(metric, layout) for metric in COST[:2]]
    if spec.corrects:
        columns += _rank_change_column(report, spec, layout, entries)
    return columns


def _gain_column(report: Report, spec: BenchmarkSpec) -> list[tuple[Column, Callable]]:
    """"Is the gain real?" in one compact column: the verdict of `halluc.evaluation.gain` on the benchmark's yes/no
    samples (all splits together): "balance shift", "survives", "loss", or – (no F1 change to explain)."""
    from halluc.evaluation.gain import pooled_split

    rows = [g for g in report.gain if g["benchmark"] == spec.name and "delta_f1" in g]
    if not rows:
        return []
    split = pooled_split(rows, spec.name)
    verdicts = {(g["model"], g["method"], g["protocol"]): g.get("verdict") or DASH for g in rows if g["split"] == split}
    column = Column("gain", "gain real?", "", numeric=False, compact=True,
                    description="balance shift: ΔF1's interval excludes 0 but ΔAUROC's and the gain over vanilla's "
                    "calibration frontier include 0")

    def cell(entry: Entry) -> Cell:
        protocol = next((r["protocol"] for r in entry.rows.values()), "")
        text = DASH if entry.method == BASELINE else verdicts.get((entry.model, entry.method, protocol), DASH)
        return Cell(text, text)

    return [(column, cell)]


def _metric_column(metric: Metric, split: str, split_label: str, compact: bool = False):
    column = Column(f"{metric.key}@{split}", metric.label, split_label, metric.unit, metric.better, metric.reference,
                    metric.description, compact=compact)
    return column, lambda e: _value_cell(e.value(metric.key, split), metric,
                                         (e.rows.get(split, {}).get("seed_sd") or {}).get(metric.key))


def _delta_column(metric: Metric, split: str, split_label: str):
    column = Column(f"delta:{metric.key}@{split}", f"Δ {metric.label}", split_label, _delta_unit(metric.unit),
                    metric.better, None, "difference to vanilla with its paired-bootstrap 95% interval; "
                    "* the interval excludes 0", compact=True)

    def cell(entry: Entry) -> Cell:
        value, base = entry.value(metric.key, split), entry.vanilla.get(split, {}).get(metric.key)
        if entry.method == BASELINE or value is None or not number(base):
            return Cell(DASH)
        delta = value - base
        interval = entry.rows[split].get("intervals", {}).get(metric.key)
        significant = excludes_zero(interval)
        improves = None if metric.better is None else (delta > 0) == (metric.better == "higher")
        detail = f"[{interval[0]:+.1f}, {interval[1]:+.1f}]" if interval else ""
        return Cell(f"{delta:+.1f}" + ("*" if significant else ""), delta, detail, significant=significant,
                    improves=improves if significant else None)

    return column, cell


def _cost_column(metric: Metric, layout: Layout):
    column = Column(f"cost:{metric.key}", metric.label, "", metric.unit, metric.better, None,
                    f"{metric.description}; averaged over splits; relative to vanilla in brackets",
                    compact=metric.key == "seconds_per_sample")

    def cell(entry: Entry) -> Cell:
        value, base = _cost(entry.rows, metric.key, layout), _cost(entry.timed_vanilla, metric.key, layout)
        if value is None:
            return Cell(DASH)
        relative = f"({value / base:.2f}×)" if base else ""
        return Cell(format_cost(value), value, relative)

    return column, cell


def _cost(rows: dict[str, dict], key: str, layout: Layout) -> float | None:
    """The sample-weighted mean of a cost over the per-sample splits."""
    pairs = [(r[key], n if number(n := r.get("n")) else 1) for s, r in rows.items()
             if s in layout.splits and number(r.get(key))]
    weight = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / weight if pairs and weight else None


def _rank_change_column(report: Report, spec: BenchmarkSpec, layout: Layout, entries: list[Entry]):
    """Rank (within each model) under the corrected benchmark -> under this one."""
    corrects = spec.corrects
    if corrects is None:  # only a benchmark that corrects another has this column
        return []
    protocol = next((row["protocol"] for e in entries for row in e.rows.values()), "")
    before = ranks_by_model(report, corrects, protocol)
    if not before:
        return []
    after = _ranks_within_models(spec, layout, entries)
    column = Column("rank_change", f"rank vs {benchmark_spec(corrects).title}", "",
                    description=f"rank among the model's methods on {benchmark_spec(corrects).title} → here; "
                    "▲ moved up", compact=True)

    def cell(entry: Entry) -> Cell:
        old, new = before.get((entry.model, entry.method)), after.get((entry.model, entry.method))
        if old is None or new is None:
            return Cell(DASH)
        move = old - new
        arrow = f"▲{move}" if move > 0 else f"▼{-move}" if move < 0 else "="
        return Cell(f"{old}→{new} {arrow}", move)

    return [(column, cell)]


def ranks_by_model(report: Report, benchmark: str, protocol: str) -> dict[tuple[str, str], int]:
    """{(model, method): rank among the model's methods by the headline}, on `benchmark` (its protocol
    `protocol` when it has one of that name, else its first)."""
    protocols = [p for b, p in report.benchmarks() if b == benchmark]
    if not protocols:
        return {}
    protocol = protocol if protocol in protocols else protocols[0]
    spec = benchmark_spec(benchmark)
    rows = [r for r in report.rows if r["benchmark"] == benchmark and r["protocol"] == protocol]
    layout = Layout.of(spec, rows)
    return _ranks_within_models(spec, layout, _sorted(spec, layout, _entries(report, rows)))


def _ranks_within_models(spec: BenchmarkSpec, layout: Layout, entries: list[Entry]) -> dict[tuple[str, str], int]:
    ranks: dict[tuple[str, str], int] = {}
    seen: dict[str, int] = {}
    for entry in entries:  # already in headline order
        if entry.value(spec.headline, layout.main) is not None:
            seen[entry.model] = seen.get(entry.model, 0) + 1
            ranks[(entry.model, entry.method)] = seen[entry.model]
    return ranks


def _value_cell(value, metric: Metric, sd: float | None = None) -> Cell:
    """The value; with several seeds (`halluc run --seeds N`) the mean ± the standard deviation over seeds."""
    if value is None:
        return Cell(DASH)
    return Cell(format_value(value, metric.unit) + (f" ± {sd:.1f}" if number(sd) else ""), value)


def format_value(value: float, unit: str = "%") -> str:
    """Counts as integers, everything else with one decimal."""
    if isinstance(value, int) or (unit == "" and float(value).is_integer()):
        return f"{value:.0f}"
    return f"{value:.1f}"


def format_cost(value: float) -> str:
    """Three significant digits, without the exponent notation of `:.3g`."""
    digits = 0 if value >= 100 else 1 if value >= 10 else 2 if value >= 1 else 3
    return f"{value:.{digits}f}"


def _delta_unit(unit: str) -> str:
    return "points" if unit == "%" else unit


def _move_constant_columns(columns: list[Column], cells: list[list[Cell]]):
    """A metric column equal in every row says nothing about the methods: it moves to a note."""
    notes, keep = [], []
    for i, column in enumerate(columns):
        texts = {row[i].text for row in cells}
        metric = "@" in column.key and not column.key.startswith("delta:")
        if metric and len(cells) > 1 and len(texts) == 1 and not column.compact:
            notes.append(f"{column.label} {texts.pop()}")
        else:
            keep.append(i)
    return [columns[i] for i in keep], [[row[i] for i in keep] for row in cells], (
        [f"same in every row: {', '.join(notes)}"] if notes else [])


def _mark_best(columns: list[Column], cells: list[list[Cell]]) -> list[list[Cell]]:
    for i, column in enumerate(columns):
        if column.key in ("rank", "rank_change") or not column.numeric:
            continue
        values = [value for row in cells if number(value := row[i].value)]
        if len(set(values)) < 2:
            continue
        best = _best(values, column)
        if best is None:
            continue
        for row in cells:
            value = row[i].value
            if number(value) and abs(value - best) < 1e-9:
                row[i] = replace(row[i], best=True)
    return cells


def _best(values: list[float], column: Column) -> float | None:
    if column.better == "higher":
        return max(values)
    if column.better == "lower":
        return min(values)
    reference = column.reference
    if reference is not None:
        return min(values, key=lambda v: abs(v - reference))
    return None


# ---------------------------------------------------------------- model comparison

def model_comparisons(report: Report) -> list[Leaderboard]:
    """With several models: per benchmark, the headline of each method (rows) on each model (columns)."""
    if len(report.models) < 2:
        return []
    boards = []
    for board in leaderboards(report):
        if len(set(board.models)) > 1:
            boards.append(_comparison(report, board))
    return boards


def _comparison(report: Report, board: Leaderboard) -> Leaderboard:
    spec = benchmark_spec(board.benchmark)
    metric = spec.metric(spec.headline)
    models = [m for m in report.models if m in board.models]
    value_at = board.columns.index(next(c for c in board.columns if c.key == f"{spec.headline}@{board.main_split}"))
    delta_at = board.columns.index(next(c for c in board.columns if c.key.startswith("delta:")))
    cells_of = {(m, meth): row for m, meth, row in zip(board.models, board.methods, board.rows)}
    methods = [m for m in report.methods if m in board.methods]
    columns = [Column("method", "method", numeric=False, compact=True)]
    columns += [Column(f"{spec.headline}@{model}", metric.label, model, metric.unit, metric.better,
                       metric.reference, f"{metric.description}; Δ vs the model's vanilla below", compact=True)
                for model in models]
    columns.append(Column("mean", metric.label, "mean over models", metric.unit, metric.better, compact=True))
    rows = []
    for method in methods:
        row = [Cell(method_name(method), method_name(method))]
        values: list[float] = []
        for model in models:
            cells = cells_of.get((model, method))
            value = cells[value_at].value if cells is not None else None
            if cells is None or not number(value):
                row.append(Cell(DASH))
                continue
            values.append(value)
            delta = cells[delta_at]
            row.append(replace(cells[value_at], best=False, detail=delta.text if delta.text != DASH else "",
                               significant=delta.significant, improves=delta.improves))
        mean = sum(values) / len(values) if len(values) == len(models) else None
        row.append(Cell(format_value(mean), mean) if mean is not None else Cell(DASH))
        rows.append(row)
    sign = -1 if spec.higher_is_better else 1
    order = sorted(range(len(rows)), key=lambda i: (rows[i][-1].value is None, sign * (rows[i][-1].value or 0), i))
    rows = [rows[i] for i in order]
    return Leaderboard(f"{spec.title} · {board.protocol}: models compared", board.benchmark, board.protocol,
                       board.main_split, columns, _mark_best(columns, rows), [methods[i] for i in order], models,
                       sorted_by="mean")


# ---------------------------------------------------------------- terminal and Markdown

def terminal(report: Report, wide: bool = False, width: int = TERMINAL_WIDTH) -> str:
    parts = []
    for board in leaderboards(report) + model_comparisons(report):
        shown = board if wide else _fit(board.select(lambda c: c.compact), width)
        parts.append(_terminal_table(shown, wide))
    return "\n\n".join(parts)


def _fit(board: Leaderboard, width: int) -> Leaderboard:
    """Drop the rightmost optional columns until the table fits `width` characters."""
    essential = 4
    while len(board.columns) > essential and _width(_terminal_table(board, False)) > width:
        last = board.columns[-1]
        board = board.select(lambda c: c is not last)
    return board


def _width(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def _terminal_table(board: Leaderboard, wide: bool) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    for column in board.columns:
        header = column.label + (f"\n{column.split}" if column.split else "")
        table.add_column(header, justify="right" if column.numeric else "left", no_wrap=True)
    for row in board.rows:
        table.add_row(*(_terminal_cell(cell, wide) for cell in row))
    buffer = io.StringIO()
    Console(file=buffer, width=1000, force_terminal=False, color_system=None, highlight=False).print(table)
    lines = [line.rstrip() for line in buffer.getvalue().splitlines() if line.strip()]
    return "\n".join([_terminal_title(board), *lines, *board.notes, _terminal_key(board)])


def _terminal_cell(cell: Cell, wide: bool) -> str:
    text = cell.text
    if cell.detail and (wide or cell.detail.endswith("×)")):
        text += f" {cell.detail}"
    return text


def _terminal_title(board: Leaderboard) -> str:
    return f"{board.title} · {', '.join(dict.fromkeys(board.models))}"


def _terminal_key(board: Leaderboard) -> str:
    spec = benchmark_spec(board.benchmark)
    order = "higher" if spec.higher_is_better else "lower"
    headline = spec.metric(spec.headline).label
    stars = "; * 95% interval of Δ vs vanilla excludes 0" if _has_intervals(board) else ""
    return f"sorted by {headline} ({order} is better){stars}"


def _has_intervals(board: Leaderboard) -> bool:
    """Whether any Δ carries an interval: without one (`--bootstrap 0`) no row can have a star."""
    deltas = [i for i, column in enumerate(board.columns) if column.key.startswith("delta:")]
    return any(row[i].detail for row in board.rows for i in deltas)


def markdown(report: Report) -> str:
    """Leaderboards to paste into a README, then the full data (long format) in a collapsed block."""
    parts = ["# Leaderboard", "", _provenance_line(report), ""]
    for board in leaderboards(report) + model_comparisons(report):
        parts += [f"## {board.title}", "", _markdown_table(board), ""]
        parts += [*board.notes, ""] if board.notes else []
    parts += ["**Bold**: best in its column. Δ: difference to vanilla of the same model, with its paired-bootstrap "
              "95% interval; * the interval excludes 0. Cost: mean per sample, relative to vanilla.", ""]
    long = long_rows(report)
    header = "| " + " | ".join(LONG_COLUMNS) + " |\n|" + "---|" * len(LONG_COLUMNS)
    lines = ["| " + " | ".join(_md(row[c]) for c in LONG_COLUMNS) + " |" for row in long]
    parts += ["<details><summary>Full data: one row per model × method × benchmark × split × metric</summary>", "",
              header, *lines, "", "</details>", ""]
    return "\n".join(parts)


def _markdown_table(board: Leaderboard) -> str:
    header = [c.label + (f" {c.split}" if c.split else "") for c in board.columns]
    align = ["---:" if c.numeric else "---" for c in board.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in board.rows:
        texts = []
        for cell in row:
            text = (cell.text + (f" {cell.detail}" if cell.detail else "")).replace("*", "\\*")
            texts.append(f"**{text}**" if cell.best else text)
        lines.append("| " + " | ".join(texts) + " |")
    return "\n".join(lines)


def _md(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _provenance_line(report: Report) -> str:
    return " · ".join(f"{name}: {value}" for name, value in provenance_summary(report).items())


def provenance_summary(report: Report) -> dict[str, str]:
    """Model, revision, protocols, dates, halluc version, commit, device: the distinct values over the runs."""
    def distinct(values) -> str:
        return ", ".join(dict.fromkeys(str(v) for v in values if v not in (None, "")))

    configs = [run.config for run in report.runs]
    prov = [c.get("provenance", {}) for c in configs]
    summary = {
        "models": distinct(report.models),
        "revision": distinct(r.get("revision") for r in report.rows),
        "protocols": distinct(f"{benchmark_spec(b).title} {p}" for b, p in report.benchmarks()),
        "date": distinct(str(p.get("date", ""))[:10] for p in prov),
        "halluc": distinct(p.get("versions", {}).get("halluc") for p in prov),
        "commit": distinct(str(p.get("commit"))[:12] for p in prov if p.get("commit")),
        "device": distinct(p.get("device") for p in prov),
        "limit": distinct(r.get("limit") for r in report.rows),
        "question set": distinct(r.get("question_set") for r in report.rows),
        "bootstrap": f"{report.bootstrap} resamples" if report.bootstrap else "",
    }
    return {name: value for name, value in summary.items() if value}
