"""The report as one self-contained HTML page: provenance header, a sortable leaderboard and figures per
benchmark, model comparisons, the methods' parameters.

Nothing is fetched at view time: the CSS, the figures (inline SVG from matplotlib) and the few lines of
script that sort a table when its header is clicked are all in the file; text uses the reader's fonts.
"""
from __future__ import annotations

import html
import json
from collections.abc import Sequence

from halluc.benchmarks.spec import benchmark_spec
from halluc.reports.leaderboard import (
    Cell,
    Column,
    Leaderboard,
    leaderboards,
    method_name,
    model_comparisons,
    provenance_summary,
)
from halluc.reports.model import BASELINE, Report, report_from_rows
from halluc.reports.plots import Figure, benchmark_figures, frontier_figures, method_colours
from halluc.version import __version__

CSS = """
:root { --ink: #1d1d1f; --muted: #5b5b66; --rule: #dcdce3; --head: #f3f3f7; --best: #eef4e6; --up: #006a4e;
        --down: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
       Roboto, "Helvetica Neue", Arial, sans-serif; }
.page { max-width: 1240px; margin: 0 auto; padding: 24px 20px 48px; }
header h1 { margin: 0 0 4px; font-size: 26px; letter-spacing: -0.01em; }
header .lede { margin: 0 0 14px; color: var(--muted); font-size: 15px; }
dl.meta { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 6px 18px; margin: 0;
          padding: 12px 14px; background: var(--head); border-radius: 8px; }
dl.meta div { min-width: 0; }
dl.meta dt { font-size: 11px; text-transform: uppercase; letter-spacing: .05em; color: var(--muted); }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
nav { margin: 14px 0 0; display: flex; flex-wrap: wrap; gap: 6px 16px; align-items: center; }
nav a { color: #0b57d0; text-decoration: none; } nav a:hover { text-decoration: underline; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; margin: 10px 0 0; font-size: 13px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 5px;
          vertical-align: baseline; }
section { margin-top: 34px; }
h2 { font-size: 20px; margin: 0 0 2px; }
h2 small { font-weight: normal; color: var(--muted); font-size: 14px; }
p.about, p.notes { margin: 4px 0 10px; color: var(--muted); max-width: 110ch; }
p.notes span { display: block; color: var(--ink); }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 13px; width: 100%; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--rule); text-align: right; vertical-align: top;
         white-space: nowrap; }
th.text, td.text { text-align: left; }
thead th { background: var(--head); font-weight: 600; vertical-align: bottom; cursor: pointer; user-select: none;
           border-bottom: 2px solid #b9b9c6; }
thead th:hover { background: #e6e6ee; }
thead th small { display: block; font-weight: normal; color: var(--muted); }
th[aria-sort]::after { content: " ▾"; color: var(--muted); }
th[aria-sort="ascending"]::after { content: " ▴"; }
td small { display: block; color: var(--muted); font-size: 11px; }
td.best { font-weight: 700; background: var(--best); }
td.sig.up { color: var(--up); font-weight: 600; } td.sig.down { color: var(--down); font-weight: 600; }
tr.vanilla td { background: #fafafa; } tr.vanilla td.best { background: var(--best); }
.figures { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 18px 24px; margin-top: 16px; }
figure { margin: 0; min-width: 0; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { font-size: 13px; color: var(--muted); margin-bottom: 4px; }
figcaption b { color: var(--ink); display: block; font-size: 14px; }
.gain { margin-top: 22px; } .gain h3 { font-size: 17px; margin: 0 0 2px; } .gain h4 { margin: 10px 0 4px; }
td.verdict { white-space: normal; min-width: 14ch; max-width: 34ch; text-align: left; }
table.gain-table { font-size: 12px; }
.params td, .params th { font-size: 12px; white-space: normal; text-align: left; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--rule);
         padding-top: 10px; }
@media (max-width: 900px) { .figures { grid-template-columns: 1fr; } }
@media print {
  @page { size: A4 landscape; margin: 12mm; }
  body { font-size: 10pt; }
  .page { max-width: none; padding: 0; }
  nav, .sort-hint { display: none; }
  section { break-before: auto; }
  figure, table { break-inside: avoid; }
  thead th { cursor: auto; }
  th[aria-sort]::after { content: ""; }
  table { font-size: 8.5pt; }
  th, td { padding: 3px 5px; }
  td.best, dl.meta, thead th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""

# Sorts a table by the clicked header: numbers by their data-sort value, text alphabetically; empty cells last.
# The first click orders best first (by the column's data-better), the next one reverses.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  headers.forEach(function (th, index) {
    th.tabIndex = 0;
    var sort = function () {
      var current = th.getAttribute("aria-sort");
      var ascending = current ? current !== "ascending" : th.dataset.better === "lower" || th.dataset.type === "text";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var key = function (row) { var cell = row.cells[index]; return cell.dataset.sort; };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === undefined || x === "") return y === undefined || y === "" ? 0 : 1;
        if (y === undefined || y === "") return -1;
        var order = th.dataset.type === "text" ? x.localeCompare(y) : parseFloat(x) - parseFloat(y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
      headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sort(); }
    });
  });
});
"""


def render_html(report: Report | Sequence[dict]) -> str:
    """The page for a report, or for bare result rows (no provenance, no intervals)."""
    if not isinstance(report, Report):
        report = report_from_rows(report)
    colours = method_colours(report.methods)
    boards = leaderboards(report)
    comparisons = model_comparisons(report)
    sections = [_benchmark_section(report, board, colours) for board in boards]
    if comparisons:
        sections.append(_comparison_section(comparisons, colours))
    sections.append(_methods_section(report, colours))
    title = f"Hallucination leaderboard · {', '.join(report.models)}"
    return "\n".join([
        "<!doctype html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>", '<div class="page">',
        _header(report, boards, comparisons, colours), "<main>", *sections, "</main>", _footer(report), "</div>",
        f"<script>{SCRIPT}</script>", "</body>", "</html>", ""])


def _header(report: Report, boards: list[Leaderboard], comparisons, colours: dict[str, str]) -> str:
    benchmarks = ", ".join(dict.fromkeys(benchmark_spec(b.benchmark).title for b in boards))
    others = [m for m in report.methods if m != BASELINE]
    lede = (f"{', '.join(report.models)} on {benchmarks}: vanilla decoding and {len(others)} training-free "
            f"hallucination-mitigation method{'s' if len(others) != 1 else ''}.")
    meta = "".join(f"<div><dt>{_e(name)}</dt><dd>{_e(value)}</dd></div>"
                   for name, value in provenance_summary(report).items())
    links = [(b.anchor, b.title) for b in boards] + ([("models", "Models compared")] if comparisons else [])
    nav = " ".join(f'<a href="#{_e(anchor)}">{_e(text)}</a>' for anchor, text in links + [("methods", "Methods")])
    return (f'<header><h1>Hallucination leaderboard</h1><p class="lede">{_e(lede)}</p>'
            f'<dl class="meta">{meta}</dl><nav>{nav}</nav>{_legend(report.methods, colours)}</header>')


def _legend(methods: Sequence[str], colours: dict[str, str]) -> str:
    items = "".join(f"<span>{_swatch(colours[m])}{_e(method_name(m))}</span>" for m in methods)
    return f'<div class="legend" aria-label="method colours">{items}</div>'


def _benchmark_section(report: Report, board: Leaderboard, colours: dict[str, str]) -> str:
    spec = benchmark_spec(board.benchmark)
    headline = spec.metric(spec.headline)
    order = "higher" if spec.higher_is_better else "lower"
    splits = sorted({r["split"] for r in report.rows if r["benchmark"] == board.benchmark})
    where = f" {board.main_split}" if len(splits) > 1 else ""
    described = f": {headline.description}" if headline.description else ""
    about = (f"Sorted by {headline.label}{where} ({order} is better{described}). "
             + (f"Columns without a split name are for {board.main_split}. " if where else "")
             + "Click a column header to sort.")
    notes = "".join(f"<span>{_e(note.capitalize())}.</span> " for note in board.notes)
    figures = "".join(_figure(f) for f in benchmark_figures(report, board, colours))
    return (f'<section id="{_e(board.anchor)}"><h2>{_e(spec.title)} <small>protocol {_e(board.protocol)}</small></h2>'
            f'<p class="about">{_e(about)}</p>{_table(board, colours)}'
            f'<p class="notes">{notes}{_MARKS}</p><div class="figures">{figures}</div>'
            f'{_gain_section(report, board, colours)}</section>')


_MARKS = ("Shaded bold: best in its column. Δ: difference to vanilla of the same model, with its paired-bootstrap "
          "95% interval below; * and colour: the interval excludes 0. Cost: mean per sample, relative to vanilla "
          "below.")


GAIN_ABOUT = ("Most POPE gains of contrastive decoding are a shift of the yes/no balance (Yin et al. 2025, "
              "arXiv 2504.10020). ΔAUROC: the change in how well the pre-cutoff yes−no margin ranks the answers, "
              "which no shift of the balance can move. Gain over the frontier: F1 (accuracy) minus what vanilla "
              "reaches at the method's own yes ratio by moving one threshold on its margin. Flips: answers vanilla "
              "got right and the method wrong (r→w) and the reverse, on the same samples, with McNemar's exact p. "
              "Cut: share of answers the plausibility cutoff decided (one answer word removed). Brackets: paired-"
              "bootstrap 95% intervals. F1 here: yes the positive class, for every benchmark.")
GAIN_COLUMNS = (("delta_f1", "ΔF1"), ("delta_auroc", "ΔAUROC"), ("frontier_f1", "F1 over frontier"),
                ("frontier_accuracy", "acc. over frontier"), ("net_flips", "net flips"))


def _gain_section(report: Report, board: Leaderboard, colours: dict[str, str]) -> str:
    """The "Is the gain real?" block of a benchmark: table, per-split details, frontier figure, caption flips."""
    from halluc.evaluation.gain import pooled_split

    rows = [g for g in report.gain if g["benchmark"] == board.benchmark and g["protocol"] == board.protocol]
    if not rows:
        return ""
    parts = []
    split = pooled_split(rows, board.benchmark)
    if split is not None:
        chosen = [r for r in rows if r["split"] == split and "kind" not in r]
        which = "all splits together" if split == "all" else f"split {split}"
        parts.append(f'<p class="about">{_e(GAIN_ABOUT)} Main table: {_e(which)}.</p>{_gain_table(chosen, colours)}')
        others = [s for s in dict.fromkeys(r["split"] for r in rows if "kind" not in r) if s != split]
        if others:
            tables = "".join(f"<h4>{_e(s)}</h4>{_gain_table([r for r in rows if r['split'] == s], colours)}"
                             for s in others)
            parts.append(f"<details><summary>Per split</summary>{tables}</details>")
        figures = "".join(_figure(f) for f in frontier_figures(report, board.benchmark, board.protocol, colours))
        parts.append(f'<div class="figures">{figures}</div>')
    captions = [r for r in rows if r.get("kind") == "captions"]
    if captions:
        parts.append(_caption_flips_table(captions, colours))
    return f'<div class="gain" id="{_e(board.anchor)}-gain"><h3>Is the gain real?</h3>{"".join(parts)}</div>'


def _gain_table(rows: list[dict], colours: dict[str, str]) -> str:
    heads = ["method", *(label for _, label in GAIN_COLUMNS), "flips r→w / w→r", "McNemar p", "AUROC", "AP",
             "cut", "yes ratio", "verdict"]
    head = "".join(f'<th class="{"text" if i in (0, len(heads) - 1) else "number"}" '
                   f'data-type="{"text" if i in (0, len(heads) - 1) else "number"}" scope="col">{_e(h)}</th>'
                   for i, h in enumerate(heads))
    body = []
    for r in sorted(rows, key=lambda r: (r["method"] != BASELINE, -(r.get("delta_f1") or 0))):
        cells = [f'<td class="text">{_swatch(colours.get(r["method"], "#6e6e6e"))}{_e(method_name(r["method"]))}</td>']
        for key, _ in GAIN_COLUMNS:
            cells.append(_gain_cell(r.get(key), (r.get("intervals") or {}).get(key), integer=key == "net_flips"))
        flips = (f'{r["right_to_wrong"]} / {r["wrong_to_right"]}' if "right_to_wrong" in r else "–")
        cells.append(f'<td class="number">{_e(flips)}</td>')
        cells.append(_plain(r.get("mcnemar_p"), "{:.3g}"))
        for key in ("auroc", "ap", "cut_share", "yes_ratio"):
            cells.append(_plain(r.get(key), "{:.1f}"))
        verdict = r.get("verdict") or ""
        reason = f"<small>{_e(r.get('reason'))}</small>" if verdict and r.get("reason") else ""
        cells.append(f'<td class="text verdict" data-sort="{_e(verdict)}" title="{_e(r.get("reason") or "")}">'
                     f'<b>{_e(verdict or "–")}</b>{reason}</td>')
        body.append(f'<tr{" class=vanilla" if r["method"] == BASELINE else ""}>{"".join(cells)}</tr>')
    return (f'<div class="table-wrap"><table class="gain-table sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _caption_flips_table(rows: list[dict], colours: dict[str, str]) -> str:
    keys = (("removed", "hallucinated removed"), ("added", "hallucinated added"), ("true_lost", "true objects lost"),
            ("net_hallucinated", "net hallucinated"))
    head = "".join(f'<th class="number" data-type="number" scope="col">{_e(label)}<small>per caption</small></th>'
                   for _, label in keys)
    body = []
    for r in rows:
        cells = [f'<td class="text">{_swatch(colours.get(r["method"], "#6e6e6e"))}{_e(method_name(r["method"]))}</td>',
                 f'<td class="text">{_e(r["split"])}</td>']
        cells += [_gain_cell(r.get(k), (r.get("intervals") or {}).get(k), digits=2) for k, _ in keys]
        cells.append(f'<td class="number">{r.get("captions_changed", 0)} / {r.get("n", 0)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<p class="about">Captions against vanilla\'s caption of the same image: hallucinated objects the method '
            "removed and added, and true objects it no longer names, per caption (means, paired-bootstrap 95% "
            'intervals).</p><div class="table-wrap"><table class="caption-flips sortable"><thead><tr>'
            f'<th class="text" data-type="text" scope="col">method</th><th class="text" data-type="text" scope="col">'
            f'split</th>{head}<th class="number" data-type="number" scope="col">captions changed</th></tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _gain_cell(value, interval, integer: bool = False, digits: int = 1) -> str:
    if not isinstance(value, (int, float)):
        return '<td class="number">–</td>'
    places = 0 if integer else digits
    text = _signed(value, places)
    significant = interval is not None and (interval[0] > 0 or interval[1] < 0)
    detail = f"<small>[{_signed(interval[0], places)}, {_signed(interval[1], places)}]</small>" if interval else ""
    classes = "number sig " + ("up" if value > 0 else "down") if significant else "number"
    return f'<td class="{classes}" data-sort="{value}">{_e(text)}{"*" if significant else ""}{detail}</td>'


def _signed(value: float, places: int) -> str:
    """+1.0 / −1.0, and a rounded zero without its sign (never "-0.0")."""
    return f"{round(value, places) + 0.0:+.{places}f}"


def _plain(value, spec: str) -> str:
    if not isinstance(value, (int, float)):
        return '<td class="number">–</td>'
    return f'<td class="number" data-sort="{value}">{_e(spec.format(value))}</td>'


def _comparison_section(boards: list[Leaderboard], colours: dict[str, str]) -> str:
    tables = "".join(f"<h3>{_e(b.title)}</h3>{_table(b, colours)}" for b in boards)
    return (f'<section id="models"><h2>Models compared</h2><p class="about">Each method\'s headline on each model, '
            f"with its difference to that model's vanilla below.</p>{tables}</section>")


def _methods_section(report: Report, colours: dict[str, str]) -> str:
    params: dict[str, str] = {}
    for row in report.rows:
        params.setdefault(row["method"], json.dumps(row.get("params") or {}, sort_keys=True, default=str))
    rows = "".join(f'<tr><td class="text">{_swatch(colours[m])}{_e(method_name(m))}</td>'
                   f'<td class="text"><code>{_e(params.get(m, ""))}</code></td></tr>' for m in report.methods)
    return (f'<section id="methods"><h2>Methods</h2><div class="table-wrap"><table class="params">'
            f'<thead><tr><th class="text">method</th><th class="text">parameters</th></tr></thead>'
            f"<tbody>{rows}</tbody></table></div></section>")


def _table(board: Leaderboard, colours: dict[str, str]) -> str:
    head = "".join(_th(c, c.key == board.sorted_by) for c in board.columns)
    body = []
    for method, row in zip(board.methods, board.rows):
        cells = "".join(_td(column, cell, colours.get(method)) for column, cell in zip(board.columns, row))
        body.append(f'<tr{" class=vanilla" if method == BASELINE else ""}>{cells}</tr>')
    return (f'<div class="table-wrap"><table class="leaderboard sortable" data-benchmark="{_e(board.benchmark)}">'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _th(column: Column, sorted_by: bool) -> str:
    kind = "number" if column.numeric else "text"
    unit = f" ({column.unit})" if column.unit else ""
    title = f"{column.label}{unit}: {column.description}" if column.description else column.label + unit
    attrs = f' data-type="{kind}" data-key="{_e(column.key)}" title="{_e(title)}" scope="col"'
    if column.better:
        attrs += f' data-better="{column.better}"'
    if sorted_by:
        attrs += f' aria-sort="{"descending" if column.better != "lower" else "ascending"}"'
    split = f"<small>{_e(column.split)}</small>" if column.split else ""
    return f'<th class="{kind}"{attrs}>{_e(column.label)}{split}</th>'


def _td(column: Column, cell: Cell, colour: str | None) -> str:
    classes = ["number" if column.numeric else "text"]
    if cell.best:
        classes.append("best")
    if cell.significant:
        classes += ["sig", "up" if cell.improves else "down" if cell.improves is False else ""]
    sort = "" if cell.value is None else f' data-sort="{_e(str(cell.value))}"'
    swatch = _swatch(colour) if column.key == "method" and colour else ""
    detail = f"<small>{_e(cell.detail)}</small>" if cell.detail else ""
    return f'<td class="{" ".join(c for c in classes if c)}"{sort}>{swatch}{_e(cell.text)}{detail}</td>'


def _figure(figure: Figure) -> str:
    return (f'<figure id="{_e(figure.key)}"><figcaption><b>{_e(figure.title)}</b>{_e(figure.caption)}'
            f"</figcaption>{figure.svg}</figure>")


def _footer(report: Report) -> str:
    runs = [str(run.path) for run in report.runs if run.path]
    source = f" from {len(runs)} run director{'y' if len(runs) == 1 else 'ies'}: {', '.join(runs)}" if runs else ""
    return (f"<footer>Made by halluc {_e(__version__)}{_e(source)}. The same data in long format: "
            '<a href="leaderboard.csv">leaderboard.csv</a>, <a href="leaderboard.json">leaderboard.json</a>; '
            'tables to paste: <a href="leaderboard.md">leaderboard.md</a>.</footer>')


def _swatch(colour: str) -> str:
    return f'<span class="swatch" style="background:{colour}"></span>'


def _e(text) -> str:
    return html.escape(str(text), quote=True)
