"""Renderers of a report into text and files: the terminal and Markdown leaderboards, the long-format CSV
and JSON, the HTML page, and writing them all at once. They read the report model (`reports.model`) and
the leaderboard tables built from it (`reports.leaderboard`); nothing below imports this module.
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from halluc.errors import HallucError
from halluc.reports.html import render_html
from halluc.reports.leaderboard import markdown, terminal
from halluc.reports.model import LONG_COLUMNS, Report, gain_long_rows, long_rows, report_from_rows
from halluc.version import __version__


def render_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LONG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(long_rows(report) + gain_long_rows(report))
    return buffer.getvalue()


def render_json(report: Report) -> str:
    data = {"halluc": __version__, "bootstrap": report.bootstrap, "columns": list(LONG_COLUMNS),
            "runs": [{"path": str(run.path) if run.path else None, "config": run.config} for run in report.runs],
            "rows": long_rows(report) + gain_long_rows(report), "gain": report.gain}
    return json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n"


# ---------------------------------------------------------------- text leaderboards and files

def render_terminal(rows: Report | Sequence[dict], wide: bool = False) -> str:
    """One table per benchmark, at most 100 columns wide (`wide`: every column and interval)."""
    return terminal(rows if isinstance(rows, Report) else report_from_rows(rows), wide=wide)


def render_markdown(report: Report) -> str:
    """Leaderboards to paste into a README, then the full data in a collapsed block."""
    return markdown(report)


def write_report(report: Report, out: Path) -> dict[str, Path]:
    """Write leaderboard.{md,csv,json,html} into `out`, all or nothing; return the paths."""
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
