"""The report's figures: matplotlib (Agg) drawn to SVG text that the HTML page inlines.

Text stays text (`svg.fonttype = "none"`): the page loads no font, and a browser can read the tick labels.
Every figure takes its colours from one method -> colour map built per report (vanilla first, grey; then
the Okabe–Ito colour-blind-safe palette), so a method has the same colour in every plot and table.
Error bars are the paired-bootstrap 95% intervals of the difference to vanilla; on plots of absolute
values they are drawn around the method's value.
"""
from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

from halluc.benchmarks.spec import BenchmarkSpec, Metric, benchmark_spec
from halluc.reports.leaderboard import Layout, Leaderboard, method_name, ranks_by_model
from halluc.reports.model import BASELINE, COST, Report, number

VANILLA_COLOUR = "#6e6e6e"
# Okabe & Ito (2008), yellow last: it is the hardest to see on white; then Paul Tol's muted scheme, then
# four more of Tol's (rose, sand, brown, magenta), four of Tol's bright and dark schemes, then eight of his
# vibrant and light schemes: one distinct colour for each of 30 methods (every registered method and
# control in one report, with room for a few more)
PALETTE = ("#e69f00", "#56b4e9", "#009e73", "#0072b2", "#d55e00", "#cc79a7", "#f0e442",
           "#332288", "#117733", "#882255", "#44aa99", "#999933", "#aa4499", "#88ccee",
           "#cc6677", "#ddcc77", "#661100", "#ee3377", "#4477aa", "#bbbbbb", "#225555", "#666633",
           "#0077bb", "#33bbee", "#009988", "#ee7733", "#cc3311", "#bbcc33", "#ee8866", "#77aadd")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # one per model
WIDTH, HEIGHT = 6.4, 3.5  # inches: two figures side by side at 1280 px
STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none", "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"], "font.size": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": "#e4e4e4",
    "grid.linewidth": 0.6, "axes.axisbelow": True, "axes.edgecolor": "#666666", "axes.titlesize": 10,
    "xtick.color": "#333333", "ytick.color": "#333333", "legend.frameon": False, "legend.fontsize": 8,
    "errorbar.capsize": 2.5,
}


@dataclass(frozen=True)
class Figure:
    key: str       # unique on the page: the prefix of every id inside its SVG
    title: str
    caption: str
    svg: str


def method_colours(methods: Sequence[str]) -> dict[str, str]:
    """A fixed colour per method for the whole report: vanilla grey, the others in order."""
    others = [m for m in dict.fromkeys(methods) if m != BASELINE]
    colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(others)}
    return {BASELINE: VANILLA_COLOUR, **colours}


def benchmark_figures(report: Report, board: Leaderboard, colours: dict[str, str]) -> list[Figure]:
    """The figures of one leaderboard, from its benchmark's spec."""
    spec = benchmark_spec(board.benchmark)
    rows = [r for r in report.rows if r["benchmark"] == board.benchmark and r["protocol"] == board.protocol]
    layout = Layout.of(spec, rows)
    plot = _Plotter(report, spec, board, rows, layout, colours)
    with _style():
        figures = [plot.split_deltas(), *[plot.reference(m) for m in spec.metrics if m.reference is not None],
                   plot.tradeoff(), plot.cost(), plot.rank_change()]
    return [f for f in figures if f is not None]


class _Plotter:
    def __init__(self, report, spec: BenchmarkSpec, board: Leaderboard, rows, layout: Layout, colours):
        self.report, self.spec, self.board, self.rows, self.layout, self.colours = (
            report, spec, board, rows, layout, colours)
        self.headline = spec.metric(spec.headline)
        self.models = list(dict.fromkeys(r["model"] for r in rows))
        self.methods = [m for m in report.methods if any(r["method"] == m for r in rows)]

    def row(self, model: str, method: str, split: str) -> dict | None:
        return next((r for r in self.rows if (r["model"], r["method"], r["split"]) == (model, method, split)), None)

    def key(self, name: str) -> str:
        return f"{self.board.anchor}-{name}"

    # ---- per-split differences to vanilla, with intervals
    def split_deltas(self) -> Figure | None:
        methods = [m for m in self.methods if m != BASELINE]
        if not methods or len(self.layout.splits) < 2:
            return None
        metric = self.headline
        fig, axes = _figure(len(self.models), height=max(HEIGHT, 0.9 + 2.6 * len(self.models)) / len(self.models))
        for ax, model in zip(axes, self.models):
            width = 0.8 / len(methods)
            for j, method in enumerate(methods):
                xs, ys, errors = [], [], []
                for i, split in enumerate(self.layout.splits):
                    row = self.row(model, method, split)
                    delta = self.report.delta(row, metric.key) if row else None
                    if delta is not None and row is not None:
                        xs.append(i - 0.4 + width * (j + 0.5))
                        ys.append(delta)
                        errors.append(_around(delta, row["intervals"].get(metric.key)))
                ax.bar(xs, ys, width * 0.92, color=self.colours[method], label=method_name(method),
                       yerr=_error_array(errors), ecolor="#222222", error_kw={"elinewidth": 0.8})
            ax.axhline(0, color="#222222", linewidth=0.8)
            ax.set_xticks(range(len(self.layout.splits)), self.layout.splits,
                          rotation=30 if len(self.layout.splits) > 6 else 0,
                          ha="right" if len(self.layout.splits) > 6 else "center")
            ax.set_ylabel(f"Δ {metric.label} vs vanilla ({_delta_unit(metric)})")
            _model_title(ax, model, self.models)
        axes[-1].set_xlabel("split")
        _legend(axes[0], len(methods))
        order = "higher" if self.spec.higher_is_better else "lower"
        return _figure_out(fig, self.key("splits"), f"Δ {metric.label} per split",
                           f"Difference to vanilla per split ({order} is better); error bars: paired-bootstrap 95% "
                           "intervals.")

    # ---- a metric with a reference value (POPE's yes ratio and its 50% line), per split
    def reference(self, metric: Metric) -> Figure | None:
        if not self.layout.splits:
            return None
        fig, axes = _figure(len(self.models), height=max(HEIGHT, 0.9 + 2.6 * len(self.models)) / len(self.models))
        width = 0.8 / len(self.methods)
        for ax, model in zip(axes, self.models):
            for j, method in enumerate(self.methods):
                xs, ys, errors = [], [], []
                for i, split in enumerate(self.layout.splits):
                    row = self.row(model, method, split)
                    if row and number(row.get(metric.key)):
                        xs.append(i - 0.4 + width * (j + 0.5))
                        ys.append(row[metric.key])
                        errors.append(_around(self.report.delta(row, metric.key), row["intervals"].get(metric.key)))
                ax.bar(xs, ys, width * 0.92, color=self.colours[method], label=method_name(method),
                       yerr=_error_array(errors), ecolor="#222222", error_kw={"elinewidth": 0.8})
            ax.axhline(metric.reference, color="#c00000", linewidth=1.1, linestyle="--")
            ax.annotate(f"{metric.reference:g}{_unit_suffix(metric)}", (1.0, metric.reference),
                        xycoords=("axes fraction", "data"), xytext=(2, 0), textcoords="offset points",
                        va="center", color="#c00000", fontsize=9)
            ax.set_xticks(range(len(self.layout.splits)), self.layout.splits)
            ax.set_ylabel(_axis_label(metric))
            if metric.unit == "%":
                ax.set_ylim(0, 100)
            _model_title(ax, model, self.models)
        axes[-1].set_xlabel("split")
        _legend(axes[0], len(self.methods))
        return _figure_out(fig, self.key(metric.key), f"{metric.label} per split",
                           f"{metric.description or metric.label}; dashed line: {metric.reference:g}"
                           f"{_unit_suffix(metric)}. Error bars: 95% interval of the difference to vanilla.")

    # ---- two metrics against each other (CHAIR_I against object recall)
    def tradeoff(self) -> Figure | None:
        if not self.spec.tradeoff:
            return None
        x_metric, y_metric = (self.spec.metric(k) for k in self.spec.tradeoff)
        points = []
        for model in self.models:
            for method in self.methods:
                row = self.row(model, method, self.layout.main)
                if row and number(row.get(x_metric.key)) and number(row.get(y_metric.key)):
                    points.append((model, method, row[x_metric.key], row[y_metric.key],
                                   _around(self.report.delta(row, x_metric.key), row["intervals"].get(x_metric.key)),
                                   _around(self.report.delta(row, y_metric.key), row["intervals"].get(y_metric.key))))
        if not points:
            return None
        fig, (ax,) = _figure(1)
        self._scatter(ax, points)
        ax.set_xlabel(_axis_label(x_metric, better=True))
        ax.set_ylabel(_axis_label(y_metric, better=True))
        return _figure_out(fig, self.key("tradeoff"), f"{y_metric.label} against {x_metric.label}",
                           f"Each method{self._split_words()}; error bars: 95% intervals of the differences "
                           "to vanilla.")

    # ---- quality gain against cost
    def cost(self) -> Figure | None:
        seconds = COST[0]
        points = []
        for model in self.models:
            base = self.row(model, BASELINE, self.layout.main)
            for method in self.methods:
                row = self.row(model, method, self.layout.main)
                own = [r for r in self.rows if (r["model"], r["method"]) == (model, method)]
                cost = _mean_cost(own, seconds.key, self.layout)
                base_cost = _mean_cost([self.report.cost_vanilla(r) or {} for r in own], seconds.key, self.layout)
                if row is None or base is None or not cost or not base_cost:
                    continue
                delta = 0.0 if method == BASELINE else self.report.delta(row, self.headline.key)
                if delta is not None:
                    points.append((model, method, cost / base_cost, delta, None,
                                   _around(delta, row["intervals"].get(self.headline.key))))
        if len(points) < 2:
            return None
        fig, (ax,) = _figure(1)
        ax.axhline(0, color="#222222", linewidth=0.8)
        ax.axvline(1, color="#999999", linewidth=0.8, linestyle=":")
        self._scatter(ax, points)
        ratios = [p[2] for p in points]
        wide = max(ratios) / min(ratios) > 10  # e.g. OPERA's search beside one-pass methods: a log axis
        if wide:
            from matplotlib.ticker import FuncFormatter  # matplotlib loads only when a report draws

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}×"))
        ax.set_xlabel("time per sample relative to vanilla" + (" (log scale)" if wide else " (×)"))
        ax.set_ylabel(f"Δ {self.headline.label} vs vanilla ({_delta_unit(self.headline)})")
        order = "up" if self.spec.higher_is_better else "down"
        return _figure_out(fig, self.key("cost"), f"Δ {self.headline.label} against cost",
                           f"Quality gain{self._split_words()} ({order} is better) against generation time "
                           "relative to vanilla (left is cheaper); error bars: 95% intervals.")

    # ---- RePOPE-style: the rank of each method before and after relabelling
    def rank_change(self) -> Figure | None:
        if not self.spec.corrects:
            return None
        before = ranks_by_model(self.report, self.spec.corrects, self.board.protocol)
        after = ranks_by_model(self.report, self.board.benchmark, self.board.protocol)
        shared = [k for k in after if k in before]
        if not shared:
            return None
        old_title = benchmark_spec(self.spec.corrects).title
        fig, axes = _figure(1, columns=len(self.models))
        for ax, model in zip(axes, self.models):
            mine = [(method, before[(m, method)], after[(m, method)]) for m, method in shared if m == model]
            for method, old, new in mine:
                colour = self.colours[method]
                ax.plot([0, 1], [old, new], color=colour, marker="o", linewidth=2)
                ax.annotate(method_name(method), (0, old), xytext=(-6, 0), textcoords="offset points",
                            ha="right", va="center", fontsize=9, color="#222222")
                ax.annotate(method_name(method), (1, new), xytext=(6, 0), textcoords="offset points",
                            ha="left", va="center", fontsize=9, color="#222222")
            count = max([len(mine), 1])
            ax.set_xticks([0, 1], [old_title, self.spec.title])
            ax.set_yticks(range(1, count + 1))
            ax.set_ylim(count + 0.5, 0.5)
            ax.set_xlim(-0.6, 1.6)
            ax.set_ylabel(f"rank by {self.headline.label}")
            ax.grid(axis="x", visible=False)
            _model_title(ax, model, self.models)
        return _figure_out(fig, self.key("ranks"), f"Rank change: {old_title} → {self.spec.title}",
                           f"Each method's rank among its model's methods on {old_title} and after relabelling "
                           f"({self.spec.title}); 1 is best.")

    def _scatter(self, ax, points) -> None:
        """Points coloured by method, marked by model, with error bars and one label per position."""
        for model, method, x, y, xerr, yerr in points:
            marker = MARKERS[self.models.index(model) % len(MARKERS)]
            ax.errorbar([x], [y], xerr=_error_array([xerr]) if xerr else None,
                        yerr=_error_array([yerr]) if yerr else None, fmt=marker, color=self.colours[method],
                        ecolor=self.colours[method], elinewidth=1, markersize=7, markeredgecolor="#222222",
                        markeredgewidth=0.5, zorder=3)
        labels: dict[tuple[float, float], list[str]] = {}
        for model, method, x, y, *_ in points:
            name = method_name(method) + (f" ({model})" if len(self.models) > 1 else "")
            labels.setdefault((round(x, 6), round(y, 6)), []).append(name)
        ax.margins(x=0.18, y=0.15)
        _place_labels(ax, {position: ", ".join(names) for position, names in labels.items()})

    def _split_words(self) -> str:
        return f" ({self.layout.main})" if len(self.layout.splits) > 1 else ""


# ---------------------------------------------------------------- helpers

def _figure(count: int, height: float = HEIGHT, columns: int = 1):
    from matplotlib.figure import Figure as MplFigure

    rows = 1 if columns > 1 else count
    fig = MplFigure(figsize=(WIDTH, height * rows), layout="constrained")
    axes = fig.subplots(rows, max(columns, 1), squeeze=False).ravel().tolist()
    return fig, axes


def _figure_out(fig, key: str, title: str, caption: str) -> Figure:
    """The figure as inline SVG: no XML prolog, ids prefixed with `key` so several SVGs share a page."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{key}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{key}-\1)", svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{key}-\1"', svg)
    return Figure(key, title, caption, svg.replace("<svg ", f'<svg role="img" aria-label="{title}" ', 1))


@contextlib.contextmanager
def _style():
    """The report's matplotlib style, and a fixed SVG hash salt: the same report gives the same SVG."""
    import matplotlib

    with matplotlib.rc_context({**STYLE, "svg.hashsalt": "halluc-report"}):
        yield


# label offsets in points from the marker, tried in order: right above, right below, left above, ...
LABEL_SPOTS = ((6, 3), (6, -11), (-6, 3), (-6, -11), (6, 13), (6, -21), (-6, 13), (-6, -21))
LABEL_SIZE = 9


def _place_labels(ax, labels: dict[tuple[float, float], str]) -> None:
    """Label each point at the first spot where the label overlaps no other label and no marker."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    box = ax.get_position()
    width, height = ax.figure.get_figwidth() * 72 * box.width, ax.figure.get_figheight() * 72 * box.height
    anchors = {p: ((p[0] - x0) / (x1 - x0 or 1) * width, (p[1] - y0) / (y1 - y0 or 1) * height) for p in labels}
    markers = [(px - 4, py - 4, px + 4, py + 4) for px, py in anchors.values()]
    taken: list[tuple[float, float, float, float]] = []
    for position, text in sorted(labels.items(), key=lambda item: (-item[0][1], item[0][0])):
        px, py = anchors[position]
        text_width = 0.55 * LABEL_SIZE * len(text)
        for dx, dy in LABEL_SPOTS:
            left = px + dx if dx > 0 else px + dx - text_width
            candidate = (left, py + dy, left + text_width, py + dy + LABEL_SIZE)
            if not any(_overlap(candidate, other) for other in taken + markers):
                break
        else:
            dx, dy = LABEL_SPOTS[0]
        taken.append(candidate)
        ax.annotate(text, position, xytext=(dx, dy), textcoords="offset points", fontsize=LABEL_SIZE,
                    ha="left" if dx > 0 else "right", va="bottom", color="#222222")


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _around(delta: float | None, interval) -> tuple[float, float] | None:
    """(below, above) error-bar lengths of an interval of the difference, drawn around its value."""
    if delta is None or not interval:
        return None
    return max(delta - interval[0], 0.0), max(interval[1] - delta, 0.0)


def _error_array(errors: list):
    if not any(errors):
        return None
    return [[e[0] if e else 0.0 for e in errors], [e[1] if e else 0.0 for e in errors]]


def _mean_cost(rows, key: str, layout: Layout) -> float | None:
    """The sample-weighted mean of a cost over the rows of the per-sample splits."""
    pairs = [(r[key], r.get("n") if number(r.get("n")) else 1) for r in rows
             if r.get("split") in layout.splits and number(r.get(key))]
    weight = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / weight if pairs and weight else None


def _legend(ax, count: int) -> None:
    """Above the plot, in one row up to eight methods (matplotlib fills a legend's columns first: one row
    keeps the reading order the same as the tables')."""
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.02), ncols=min(count, 8), borderaxespad=0,
              handlelength=1.0, handletextpad=0.4, columnspacing=0.9)


def _model_title(ax, model: str, models: list[str]) -> None:
    if len(models) > 1:
        ax.set_title(model, loc="right", fontsize=9, color="#444444")


def _unit_suffix(metric: Metric) -> str:
    return "%" if metric.unit == "%" else f" {metric.unit}" if metric.unit else ""


def _axis_label(metric: Metric, better: bool = False) -> str:
    unit = f" ({metric.unit})" if metric.unit else ""
    hint = {"higher": ", higher is better", "lower": ", lower is better"}.get(metric.better or "", "") if better else ""
    return f"{metric.label}{unit}{hint}"


def _delta_unit(metric: Metric) -> str:
    return "points" if metric.unit in ("%", "") else metric.unit


# ---------------------------------------------------------------- "Is the gain real?": vanilla's frontier

def frontier_figures(report: Report, benchmark: str, protocol: str, colours: dict[str, str]) -> list[Figure]:
    """Per model: vanilla's calibration frontier (F1 against yes ratio, every threshold on its yes−no margin)
    on the benchmark's yes/no samples (all splits together), with each method as a labelled point."""
    from halluc.evaluation.gain import pooled_split

    rows = [g for g in report.gain if g["benchmark"] == benchmark and g["protocol"] == protocol]
    split = pooled_split(rows, benchmark)
    figures = []
    with _style():
        for model in dict.fromkeys(r["model"] for r in rows):
            mine = [r for r in rows if r["model"] == model and r["split"] == split]
            base = next((r for r in mine if r["method"] == BASELINE and r.get("frontier")), None)
            if base is None:
                continue
            fig, (ax,) = _figure(1)
            curve = list(zip(*base["frontier"]))
            ax.plot(curve[0], curve[1], color=VANILLA_COLOUR, linewidth=1.4, label="vanilla's frontier")
            labels: dict[tuple[float, float], list[str]] = {}
            for r in mine:
                if number(r.get("yes_ratio")) and number(r.get("f1")):
                    shift = "*" if r.get("verdict") == "balance shift" else ""
                    ax.plot([r["yes_ratio"]], [r["f1"]], "o", color=colours.get(r["method"], VANILLA_COLOUR),
                            markeredgecolor="#222222", markeredgewidth=0.5, markersize=7, zorder=3)
                    labels.setdefault((round(r["yes_ratio"], 6), round(r["f1"], 6)), []).append(
                        method_name(r["method"]) + shift)
            xs, ys = [p[0] for p in labels] or [50.0], [p[1] for p in labels] or [50.0]
            ax.set_xlim(max(0.0, min(xs) - 12), min(100.0, max(xs) + 12))  # the region the methods are in
            ax.set_ylim(max(0.0, min(ys) - 6), min(100.0, max(max(curve[1]), max(ys)) + 3))
            ax.set_xlabel("yes ratio (%)")
            ax.set_ylabel("F1 (%), yes positive")
            ax.legend(loc="lower right")
            _place_labels(ax, {p: ", ".join(names) for p, names in labels.items()})
            key = f"{benchmark}-{protocol}-{model}-frontier".replace(" ", "-")
            which = "all splits together" if split == "all" else f"split {split}"
            figures.append(_figure_out(
                fig, re.sub(r"[^A-Za-z0-9_-]", "-", key), f"Vanilla's calibration frontier{_model_words(model, rows)}",
                f"F1 that moving one threshold on vanilla's yes−no margin reaches at every yes ratio ({which}); each "
                "method at its own yes ratio and F1 (* balance shift). A point on the curve does what a threshold "
                "does; only a point above it ranks the answers better."))
    return figures


def _model_words(model: str, rows) -> str:
    return f" · {model}" if len({r['model'] for r in rows}) > 1 else ""
