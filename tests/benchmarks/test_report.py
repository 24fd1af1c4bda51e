"""Reports from made-up runs: per-benchmark leaderboards, terminal width, long format, repeated input, writing."""
from __future__ import annotations

import csv
import io
import json
import random
import re

import pytest

from halluc.benchmarks import spec as spec_module
from halluc.benchmarks.spec import BenchmarkSpec, benchmark_spec
from halluc.errors import HallucError
from halluc.evaluation.intervals import paired_intervals
from halluc.reports.leaderboard import leaderboards, model_comparisons
from halluc.reports.model import LONG_COLUMNS, Run, build_report, long_rows
from halluc.reports.render import render_csv, render_json, render_markdown, render_terminal, write_files, write_report
from tests.benchmarks.fake_runs import fake_rows, fake_run

METHODS = ("none", "vcd", "pai", "ritual")


@pytest.fixture
def toy_report():
    return build_report([fake_run(None, "toy-llava", "pope", METHODS), fake_run(None, "toy-llava", "chair", METHODS)],
                        bootstrap=100)


def column_keys(board) -> list[str]:
    return [c.key for c in board.columns]


def test_one_leaderboard_per_benchmark_with_only_its_own_columns(toy_report):
    pope, chair = leaderboards(toy_report)
    assert column_keys(pope)[:8] == ["rank", "method", "f1@mean", "delta:f1@mean", "f1@random", "f1@popular",
                                     "f1@adversarial", "yes_ratio@mean"]
    assert column_keys(chair)[:7] == ["rank", "method", "chair_i@val", "delta:chair_i@val", "chair_s@val",
                                      "recall@val", "avg_len@val"]
    assert not any("chair" in key for key in column_keys(pope))
    assert not any(key.startswith(("f1", "yes_ratio")) for key in column_keys(chair))
    for board in (pope, chair):
        assert column_keys(board)[-2:] == ["cost:seconds_per_sample", "cost:tokens_per_second"]
        labels = [(c.label, c.split) for c in board.columns]
        assert len(labels) == len(set(labels)), "a header names one metric only"
    assert "n 150" in pope.notes[0]  # equal in every row: a note, not a column


def test_rows_sorted_by_headline_with_best_and_significant_marks(toy_report):
    pope, chair = leaderboards(toy_report)
    for board, higher in ((pope, True), (chair, False)):
        at = column_keys(board).index(f"{board.rows[0][2].value and board.columns[2].key}")
        values = [row[at].value for row in board.rows]
        assert values == sorted(values, reverse=higher)
        assert board.rows[0][at].best and not any(row[at].best for row in board.rows[1:])
        assert [c.text for c in (row[0] for row in board.rows)] == ["1", "2", "3", "4"]
    delta = column_keys(pope).index("delta:f1@mean")
    cells = {method: row[delta] for method, row in zip(pope.methods, pope.rows)}
    assert cells["none"].text == "–"
    for method in METHODS[1:]:  # fake intervals are the difference ± 1.5
        cell = cells[method]
        assert cell.significant == (abs(cell.value) > 1.5) and cell.detail.startswith("[")
        assert cell.text.endswith("*") == cell.significant


def test_mme_leaderboard_shows_its_totals_not_its_subtasks():
    from halluc.benchmarks.mme import scoring as mme

    report = build_report([Run(None, {}, fake_rows("toy-llava", "mme", METHODS, splits=mme.SUBTASKS))])
    (board,) = leaderboards(report)
    assert column_keys(board)[2:6] == ["score@perception", "delta:score@perception", "score@cognition",
                                       "score@hallucination"]
    assert not any(key.startswith(("acc", "score@existence")) for key in column_keys(board))
    assert max(len(line) for line in render_terminal(report).splitlines()) <= 100


def test_cost_is_relative_to_vanilla(toy_report):
    pope = leaderboards(toy_report)[0]
    at = column_keys(pope).index("cost:seconds_per_sample")
    cells = {method: row[at] for method, row in zip(pope.methods, pope.rows)}
    assert [cells[m].detail for m in ("none", "vcd", "ritual")] == ["(1.00×)", "(2.00×)", "(4.00×)"]
    assert cells["none"].best


def test_terminal_fits_100_columns_headline_first_and_wide_shows_everything(toy_report):
    text = render_terminal(toy_report)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert text.splitlines()[0] == "POPE · llava · toy-llava"
    pope_header = text.splitlines()[1:3]
    assert pope_header[0].split()[:3] == ["F1", "Δ", "F1"] and "mean" in pope_header[1]
    assert "[" not in text  # intervals only with --wide
    wide = render_terminal(toy_report, wide=True)
    assert "accuracy" in wide and "[" in wide and "tokens/s" in wide


def test_terminal_from_plain_rows_as_halluc_run_prints_it():
    rows = fake_rows("toy-llava", "pope", METHODS) + fake_rows("toy-llava", "chair", METHODS)
    text = render_terminal(rows)
    assert text.count("POPE · llava") == 1 and text.count("CHAIR · llava") == 1
    assert max(len(line) for line in text.splitlines()) <= 100


def test_long_format_one_row_per_metric_with_intervals(toy_report):
    rows = long_rows(toy_report)
    pope = benchmark_spec("pope")
    pope_rows = [r for r in rows if r["benchmark"] == "pope"]
    assert len(pope_rows) == len(METHODS) * 4 * (len(pope.metrics) + 3)  # 3 splits + mean; metrics + cost
    vcd_f1 = next(r for r in rows if (r["method"], r["split"], r["metric"]) == ("vcd", "mean", "f1"))
    assert vcd_f1["ci_low"] == pytest.approx(vcd_f1["delta"] - 1.5) and vcd_f1["label"] == "F1"
    assert vcd_f1["excludes_zero"] == (abs(vcd_f1["delta"]) > 1.5)
    assert set(rows[0]) == set(LONG_COLUMNS)
    parsed = list(csv.DictReader(io.StringIO(render_csv(toy_report))))
    assert len(parsed) == len(rows) and list(parsed[0]) == list(LONG_COLUMNS)
    data = json.loads(render_json(toy_report))
    assert data["rows"] == json.loads(json.dumps(rows)) and data["bootstrap"] == 100


def test_recall_never_names_two_metrics(toy_report):
    """POPE's recall (yes to present objects) and CHAIR's (objects mentioned) share a key, never a label."""
    labels = {(r["benchmark"], r["metric"]): r["label"] for r in long_rows(toy_report)}
    assert labels[("pope", "recall")] == "POPE recall" and labels[("chair", "recall")] == "object recall"
    markdown = render_markdown(toy_report)
    for header in (line for line in markdown.splitlines() if line.startswith("| #")):
        cells = [c.strip() for c in header.strip("|").split("|")]
        assert "recall" not in cells and len(cells) == len(set(cells))


def test_markdown_pastes_tables_then_keeps_the_full_data(toy_report):
    markdown = render_markdown(toy_report)
    assert markdown.index("## POPE · llava") < markdown.index("## CHAIR · llava") < markdown.index("<details>")
    full = markdown[markdown.index("<details>"):]
    assert full.count("\n| toy-llava |") == len(long_rows(toy_report))


def test_same_run_twice_counts_once_and_vanilla_shared_by_runs_is_kept_once():
    run = fake_run(None, "toy-llava", "pope", METHODS)
    assert build_report([run, run]).rows == build_report([run]).rows
    other = Run(None, {}, fake_rows("toy-llava", "pope", ("none", "vhr")))
    rows = build_report([run, other]).rows
    assert sum(r["method"] == "none" for r in rows) == 4 and sum(r["method"] == "vhr" for r in rows) == 4


def test_conflicting_rows_are_refused():
    first = fake_run(None, "toy-llava", "pope", METHODS)
    second = Run(None, {}, fake_rows("toy-llava", "pope", METHODS, seed=1))
    with pytest.raises(HallucError, match="both hold vanilla|both hold none"):
        build_report([first, second])


def test_one_label_with_two_parameter_sets_is_told_apart():
    low = fake_rows("toy-llava", "pope", ("none", "vcd"))
    high = [dict(r, params={r["method"]: {"alpha": 2.0}}) if r["method"] == "vcd" else r for r in low]
    high = [dict(r, f1=r["f1"] + 1) if r["method"] == "vcd" else r for r in high]
    methods = build_report([Run(None, {}, low), Run(None, {}, high)]).methods
    assert methods == ["none", "vcd[alpha=1.0]", "vcd[alpha=2.0]"]


def test_model_comparison_only_with_several_models(toy_report):
    assert model_comparisons(toy_report) == []
    report = build_report([fake_run(None, "toy-llava", "pope", METHODS), fake_run(None, "tiny-qwen", "pope", METHODS)])
    (comparison,) = model_comparisons(report)
    assert [c.split for c in comparison.columns] == ["", "toy-llava", "tiny-qwen", "mean over models"]
    assert sorted(comparison.methods) == sorted(METHODS)
    board = leaderboards(report)[0]
    assert column_keys(board)[:3] == ["rank", "model", "method"] and len(board.rows) == 8


def test_rank_change_for_a_benchmark_that_relabels_another():
    pope = benchmark_spec("pope")
    relabelled = BenchmarkSpec(name="test-repope", title="RePOPE-test", headline="f1", metrics=pope.metrics,
                               build=pope.build, summary_rows=pope.summary_rows, summary_split="mean",
                               corrects="pope")
    original = fake_rows("toy-llava", "pope", METHODS)
    relabel = [dict(r, benchmark="test-repope", f1=100 - r["f1"]) for r in original]  # reverses the order
    with spec_module.BENCHMARKS.registered("test-repope", relabelled):
        report = build_report([Run(None, {}, original), Run(None, {}, relabel)])
        board = next(b for b in leaderboards(report) if b.benchmark == "test-repope")
    at = column_keys(board).index("rank_change")
    assert [row[at].text for row in board.rows] == ["4→1 ▲3", "3→2 ▲1", "2→3 ▼1", "1→4 ▼3"]


def test_intervals_cover_summary_splits():
    """A resample draws every split at once, so POPE's mean gets an interval from the spec's summary_rows."""
    spec = benchmark_spec("pope")
    aggregate = lambda split, units: {"f1": 100.0 * sum(units) / len(units), "n": len(units)}  # noqa: E731
    rng = random.Random(0)
    units = {split: {"none": [rng.random() < 0.5 for _ in range(80)]} for split in ("random", "popular")}
    for split in units:
        units[split]["same"] = list(units[split]["none"])
        units[split]["better"] = [True] * 80
    intervals = paired_intervals(units, aggregate, spec.summary_rows, n=200)
    assert intervals[("mean", "same", "f1")] == (0.0, 0.0)
    low, high = intervals[("mean", "better", "f1")]
    assert 0 < low <= high and ("random", "better", "f1") in intervals and ("mean", "better", "n") in intervals


def test_write_report_writes_four_files_and_refuses_a_file_as_out(toy_report, tmp_path):
    paths = write_report(toy_report, tmp_path / "report")
    assert sorted(p.name for p in paths.values()) == ["leaderboard.csv", "leaderboard.html", "leaderboard.json",
                                                        "leaderboard.md"]
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(p.name for p in paths.values())
    target = tmp_path / "a-file"
    target.write_text("keep me")
    with pytest.raises(HallucError, match="is a file"):
        write_report(toy_report, target)
    assert target.read_text() == "keep me"


def test_write_files_leaves_nothing_when_a_write_fails(tmp_path, monkeypatch):
    from pathlib import Path

    real = Path.write_text

    def failing(self, text, *args, **kwargs):
        if ".leaderboard.html" in self.name:
            raise OSError(28, "No space left on device")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing)
    with pytest.raises(HallucError, match="No space left on device"):
        write_files(tmp_path / "out", {"leaderboard.md": "x", "leaderboard.html": "y"})
    assert not (tmp_path / "out").exists()


def test_a_method_has_one_colour_in_every_figure(toy_report):
    from halluc.reports.plots import PALETTE, VANILLA_COLOUR, benchmark_figures, method_colours

    colours = method_colours(toy_report.methods)
    assert list(colours) == ["none", "vcd", "pai", "ritual"] and colours["none"] == VANILLA_COLOUR
    for board in leaderboards(toy_report):
        for figure in benchmark_figures(toy_report, board, colours):
            used = set(re.findall(r"#[0-9a-f]{6}", figure.svg)) & {*PALETTE, VANILLA_COLOUR}
            assert used == {colours[m] for m in METHODS if colours[m] in used} and len(used) >= 3, figure.key


def test_spec_compact_and_tradeoff_name_its_own_metrics():
    pope = benchmark_spec("pope")
    with pytest.raises(ValueError, match="compact and tradeoff"):
        spec_module.register_benchmark(BenchmarkSpec(name="test-bad", title="bad", headline="f1",
                                                     metrics=pope.metrics, build=pope.build, compact=("chair_s",)))
    assert "test-bad" not in spec_module.benchmark_names()


def test_costs_are_relative_to_the_vanilla_of_the_same_run(tmp_path):
    """Two runs share vanilla's metrics but were timed apart (here the second machine is 3x slower): each
    method's cost is against its own run's vanilla, in the long rows, the leaderboard and the cost plot."""
    first = fake_run(tmp_path / "fast", "toy-llava", "pope", ("none", "vcd"))
    slow = [dict(r, seconds_per_sample=3 * r["seconds_per_sample"]) for r in fake_rows("toy-llava", "pope",
                                                                                          ("none", "vhr"))]
    report = build_report([first, Run(tmp_path / "slow", {}, slow)])
    ratios = {r["method"]: r["ratio"] for r in long_rows(report)
              if r["metric"] == "seconds_per_sample" and r["split"] == "random"}
    assert ratios == pytest.approx({"none": 1.0, "vcd": 2.0, "vhr": 2.0})  # against the joined vanilla: vhr 6.0
    board = next(b for b in leaderboards(report) if b.benchmark == "pope")
    column = next(i for i, c in enumerate(board.columns) if c.key == "cost:seconds_per_sample")
    details = {method: row[column].detail for method, row in zip(board.methods, board.rows)}
    assert details["vhr"] == details["vcd"] == "(2.00×)"


def test_every_registered_method_gets_its_own_colour():
    from halluc.interventions import method_names
    from halluc.reports.plots import method_colours

    colours = method_colours(["none", *method_names()])
    assert len(set(colours.values())) == len(colours)
