"""`halluc report` on made-up run directories: bad input is one line and exit 2, repeated runs count once,
`--out` is all or nothing, and the terminal tables fit 100 columns."""
from __future__ import annotations

import json
import os
import sys

import pytest
from typer.testing import CliRunner

from halluc.cli import app
from tests.benchmarks.fake_runs import fake_rows, write_run

METHODS = ("none", "vcd", "pai")


def invoke(*args: str):
    return CliRunner().invoke(app, ["report", *args, "--bootstrap", "0"] if "--bootstrap" not in args
                              else ["report", *args])


@pytest.fixture
def runs(tmp_path):
    pope = write_run(tmp_path / "pope", fake_rows("toy-llava", "pope", METHODS))
    chair = write_run(tmp_path / "chair", fake_rows("toy-llava", "chair", METHODS))
    return pope, chair


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_report_prints_one_table_per_benchmark_within_100_columns(runs, tmp_path):
    result = invoke(*map(str, runs), "--out", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    assert "POPE · llava" in result.stdout and "CHAIR · llava" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 100
    wide = invoke(*map(str, runs), "--wide")
    assert "accuracy" in wide.stdout and "accuracy" not in result.stdout


def test_same_run_twice_is_read_once(runs, tmp_path):
    pope, _ = runs
    once, twice = tmp_path / "once", tmp_path / "twice"
    assert invoke(str(pope), "--out", str(once)).exit_code == 0
    result = invoke(str(pope), str(pope / ".." / "pope"), "--out", str(twice))
    assert result.exit_code == 0 and "given more than once; it is read once" in result.stderr
    rows = json.loads((twice / "leaderboard.json").read_text())["rows"]
    assert rows == json.loads((once / "leaderboard.json").read_text())["rows"]
    assert [line.split()[0] for line in result.stdout.splitlines()].count("vanilla") == 1


def test_two_runs_with_different_results_under_one_name_are_refused(runs, tmp_path):
    pope, _ = runs
    other = write_run(tmp_path / "other", fake_rows("toy-llava", "pope", METHODS, seed=7))
    line = one_error_line(invoke(str(pope), str(other)))
    assert str(pope) in line and str(other) in line and "report them separately" in line


@pytest.mark.parametrize("content", ['{"rows": [', "\xff\xfe", '{"rows": 3}', '[1, 2]', '{"rows": []}',
                                     '{"rows": [{"model": "m"}]}'])
def test_corrupt_results_json_is_one_line_naming_the_file(runs, content):
    pope, _ = runs
    (pope / "results.json").write_bytes(content.encode("latin-1"))
    line = one_error_line(invoke(str(pope)))
    assert str(pope / "results.json") in line


def test_corrupt_config_json_is_one_line_naming_the_file(runs):
    pope, _ = runs
    (pope / "config.json").write_text('{"model": ')
    assert str(pope / "config.json") in one_error_line(invoke(str(pope)))


def test_unknown_benchmark_in_results_names_the_file(runs):
    pope, _ = runs
    data = json.loads((pope / "results.json").read_text())
    data["rows"][0]["benchmark"] = "popee"
    (pope / "results.json").write_text(json.dumps(data))
    line = one_error_line(invoke(str(pope)))
    assert str(pope / "results.json") in line and "unknown benchmark 'popee'" in line


@pytest.mark.parametrize("value", ["-5", "many", "1.5"])
def test_bad_bootstrap_is_one_line(runs, value):
    assert "--bootstrap" in one_error_line(invoke(str(runs[0]), "--bootstrap", value))


def test_unknown_option_and_missing_runs_are_one_line(runs):
    assert "--colour" in one_error_line(invoke(str(runs[0]), "--colour"))
    assert "Missing argument" in one_error_line(CliRunner().invoke(app, ["report"]))


def test_out_is_a_file(runs, tmp_path):
    target = tmp_path / "leaderboard.html"
    target.write_text("an older page")
    line = one_error_line(invoke(str(runs[0]), "--out", str(target)))
    assert str(target) in line and target.read_text() == "an older page"


def test_out_below_a_file(runs, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("x")
    line = one_error_line(invoke(str(runs[0]), "--out", str(target / "report")))
    assert str(target / "report") in line and target.read_text() == "x"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_out_in_a_place_nobody_may_write(runs):
    assert "/proc/halluc-report" in one_error_line(invoke(str(runs[0]), "--out", "/proc/halluc-report"))
    assert not os.path.exists("/proc/halluc-report")


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="root writes into read-only directories")
def test_out_in_a_read_only_directory_leaves_nothing(runs, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        one_error_line(invoke(str(runs[0]), "--out", str(locked / "report")))
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
