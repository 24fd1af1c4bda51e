"""The main job's wall-clock bench: one CSV row per round, its time split into generation and the rest."""
from __future__ import annotations

import csv

import pytest

from tests.speed.helpers import load_script


@pytest.mark.slow
def test_a_small_job_gives_one_row_per_round(tmp_path):
    wall = load_script("bench_main_job_wall")
    out = tmp_path / "wall.csv"
    wall.main(["--rounds", "1", "--target", "600", "--out", str(out), "--", "--limit", "4", "--method", "vcd",
               "-b", "pope", "--split", "random", "--bootstrap", "0"])
    with out.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == wall.COLUMNS
        (row,) = list(reader)
    seconds, generation = float(row["wall_seconds"]), float(row["generation_seconds"])
    assert 0 <= generation < seconds < 600 and float(row["rest_seconds"]) == pytest.approx(seconds - generation)
    assert row["within_target"] == "True" and row["args"].startswith("--limit 4 --method vcd")


def test_a_failing_run_and_bad_rounds_are_one_line(tmp_path, capsys):
    wall = load_script("bench_main_job_wall")
    with pytest.raises(SystemExit, match="halluc run failed: .*"):
        wall.main(["--out", str(tmp_path / "w.csv"), "--", "--method", "no-such-method"])
    with pytest.raises(SystemExit):
        wall.main(["--rounds", "0"])
    assert "--rounds must be at least 1" in capsys.readouterr().err
