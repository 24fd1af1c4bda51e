"""The HTML report in headless Chromium: what a reader sees, measured by the browser, not read from the HTML text.

Two models on POPE and CHAIR, with intervals, rendered to a page; Chromium (over the DevTools protocol)
loads it at 1280 px and reports console errors, requests, layout widths, tick labels, and the row order
before and after real mouse clicks on a table header. CI installs Chromium (`.ci/run`); the test skips only
when no Chromium can be found.
"""
from __future__ import annotations

import struct

import pytest

from halluc.reports.model import build_report
from halluc.reports.render import write_report
from tests.benchmarks.fake_runs import fake_run
from tests.browser import Chromium, find_chromium

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH: install Debian's `chromium` "
                                "(.ci/run does) or set $CHROMIUM")
METHODS = ("none", "vcd", "pai", "ritual", "vhr")

# Per axes of every figure: how many tick labels each axis shows, and how many of them have a rendered size.
TICKS = """
Array.from(document.querySelectorAll("figure svg")).map(svg => ({
  figure: svg.closest("figure").id,
  axes: Array.from(svg.querySelectorAll("g[id*='-axes_']")).map(axes => ["xtick", "ytick"].map(axis =>
    Array.from(axes.querySelectorAll(`g[id*='-${axis}_'] text`))
      .filter(t => t.textContent.trim() && t.getBoundingClientRect().width > 0).length))
}))
"""
OVERFLOW = """
({page: document.documentElement.scrollWidth, viewport: window.innerWidth,
  tables: Array.from(document.querySelectorAll(".table-wrap")).filter(w => w.scrollWidth > w.clientWidth + 1).length,
  wide: Array.from(document.querySelectorAll("table, svg, figure, dl")).filter(
    e => e.getBoundingClientRect().right > window.innerWidth + 0.5).length})
"""
COLUMN = """
((table, key) => {
  const index = Array.from(table.tHead.rows[0].cells).findIndex(th => th.dataset.key === key);
  return Array.from(table.tBodies[0].rows).map(row => row.cells[index].dataset.sort || "");
})(document.querySelector("table.leaderboard"), %r)
"""


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser-report")
    runs = [fake_run(None, "toy-llava", "pope", METHODS), fake_run(None, "toy-llava", "chair", METHODS),
            fake_run(None, "tiny-qwen", "pope", METHODS)]
    return write_report(build_report(runs, bootstrap=100), out)["html"]


@pytest.fixture(scope="module")
def browser():
    with Chromium.launch(CHROMIUM) as chromium:
        yield chromium


def test_page_loads_without_errors_or_requests_and_fits_1280(browser, report_page, tmp_path):
    page = browser.open(report_page, width=1280)
    assert page.errors == []
    assert page.requests == [report_page.resolve().as_uri()], "the page must fetch nothing"
    widths = page.evaluate(OVERFLOW)
    assert widths["page"] <= widths["viewport"] == 1280 and widths["tables"] == 0 and widths["wide"] == 0, widths
    shot = page.screenshot(tmp_path / "report.png")
    width, height = struct.unpack(">II", shot.read_bytes()[16:24])
    assert width == 1280 and height > 1500


def test_every_plot_has_tick_labels_on_both_axes(browser, report_page):
    page = browser.open(report_page)
    figures = page.evaluate(TICKS)
    assert len(figures) == 5  # POPE: per split, yes ratio (a panel per model), cost; CHAIR: trade-off, cost
    assert [len(f["axes"]) for f in figures[:2]] == [2, 2]
    for figure in figures:
        assert figure["axes"], figure
        for x_ticks, y_ticks in figure["axes"]:
            assert x_ticks >= 2 and y_ticks >= 2, figure


def test_clicking_a_header_sorts_the_table(browser, report_page):
    page = browser.open(report_page)
    f1 = [float(v) for v in page.evaluate(COLUMN % "f1@mean")]
    assert f1 == sorted(f1, reverse=True)  # as rendered: by the headline, best first
    before = page.evaluate(COLUMN % "method")
    page.click("table.leaderboard th[data-key='method']")
    after = page.evaluate(COLUMN % "method")
    assert after == sorted(before) and after != before
    page.click("table.leaderboard th[data-key='yes_ratio@mean']")
    first = [float(v) for v in page.evaluate(COLUMN % "yes_ratio@mean")]
    page.click("table.leaderboard th[data-key='yes_ratio@mean']")
    second = [float(v) for v in page.evaluate(COLUMN % "yes_ratio@mean")]
    assert first == sorted(first, reverse=True) and second == sorted(first)
    assert page.evaluate("document.querySelector(\"th[data-key='yes_ratio@mean']\").getAttribute('aria-sort')") \
        == "ascending"


def test_print_layout_fits_the_page(browser, report_page):
    page = browser.open(report_page, width=1040, print_media=True)  # A4 landscape less margins, in CSS px
    assert page.evaluate("document.documentElement.scrollWidth") <= 1040
    assert page.evaluate("getComputedStyle(document.querySelector('nav')).display") == "none"
