"""A self-contained HTML leaderboard with inline SVG plots (no JavaScript, no external files)."""
from __future__ import annotations

import html
from collections.abc import Sequence

from halluc.benchmarks.report import render_markdown, table
from halluc.benchmarks.spec import benchmark_spec

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def render_html(rows: list[dict]) -> str:
    sections = [_table_html(rows)]
    for bench in dict.fromkeys(r["benchmark"] for r in rows):
        bench_rows = [r for r in rows if r["benchmark"] == bench]
        metric = benchmark_spec(bench).headline
        sections.append(_bars(bench_rows, metric, f"{bench}: {metric} per split"))
        if bench == "pope":
            sections.append(_bars(bench_rows, "yes_ratio", "pope: yes-ratio of predictions (50 = balanced)"))
        if bench == "chair":
            sections.append(_scatter(bench_rows, "recall", "chair_s", "chair: CHAIR_S vs recall"))
            sections.append(_scatter(bench_rows, "avg_len", "chair_i", "chair: CHAIR_I vs caption length"))
        sections.append(_scatter(bench_rows, "seconds_per_sample", f"delta_{metric}",
                                 f"{bench}: quality gain (Δ{metric} vs vanilla) vs cost (s/sample)"))
    body = "\n".join(sections)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>halluc leaderboard</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}"
            f"td,th{{border:1px solid #ccc;padding:2px 6px;font-size:12px}}h2{{font-size:16px}}</style>"
            f"</head><body><h1>halluc leaderboard</h1>{body}"
            f"<h2>Markdown</h2><pre>{html.escape(render_markdown(rows))}</pre></body></html>\n")


def _table_html(rows: list[dict]) -> str:
    header, cells = table(rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in line) + "</tr>" for line in cells)
    return f"<table><tr>{head}</tr>{body}</table>"


def _bars(rows: Sequence[dict], metric: str, title: str) -> str:
    """Grouped bars: one group per split, one bar per method."""
    splits = list(dict.fromkeys(r["split"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    values = {(r["split"], r["method"]): r.get(metric) for r in rows}
    top = max([v for v in values.values() if isinstance(v, (int, float))] + [1e-9])
    width, height, bar = 60 + len(splits) * (len(methods) * 18 + 20), 220, 16
    shapes = []
    for i, split in enumerate(splits):
        x0 = 50 + i * (len(methods) * 18 + 20)
        shapes.append(f"<text x='{x0}' y='{height - 5}' font-size='11'>{html.escape(split)}</text>")
        for j, method in enumerate(methods):
            v = values.get((split, method))
            if isinstance(v, (int, float)):
                h = 170 * v / top
                shapes.append(f"<rect x='{x0 + j * 18}' y='{190 - h:.1f}' width='{bar}' height='{h:.1f}' "
                              f"fill='{PALETTE[j % len(PALETTE)]}'><title>{html.escape(method)}: {v:.2f}</title></rect>")
    return _svg(title, width, height, shapes, methods)


def _scatter(rows: Sequence[dict], xkey: str, ykey: str, title: str) -> str:
    points = [(r[xkey], r[ykey], r["method"]) for r in rows
              if isinstance(r.get(xkey), (int, float)) and isinstance(r.get(ykey), (int, float))]
    if not points:
        return ""
    methods = list(dict.fromkeys(p[2] for p in points))
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    span = lambda vs: (min(vs), max(vs) if max(vs) > min(vs) else min(vs) + 1)  # noqa: E731
    (x0, x1), (y0, y1) = span(xs), span(ys)
    shapes = [f"<text x='40' y='215' font-size='11'>{html.escape(xkey)} →</text>",
              f"<text x='2' y='20' font-size='11'>{html.escape(ykey)}</text>"]
    for x, y, method in points:
        cx, cy = 50 + 300 * (x - x0) / (x1 - x0), 190 - 160 * (y - y0) / (y1 - y0)
        colour = PALETTE[methods.index(method) % len(PALETTE)]
        shapes.append(f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='5' fill='{colour}'>"
                      f"<title>{html.escape(method)}: {x:.3g}, {y:.3g}</title></circle>")
    return _svg(title, 380, 220, shapes, methods)


def _svg(title: str, width: int, height: int, shapes: list[str], methods: list[str]) -> str:
    legend = " ".join(f"<span style='color:{PALETTE[i % len(PALETTE)]}'>■ {html.escape(m)}</span>"
                      for i, m in enumerate(methods))
    return (f"<h2>{html.escape(title)}</h2><div>{legend}</div>"
            f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>{''.join(shapes)}</svg>")
