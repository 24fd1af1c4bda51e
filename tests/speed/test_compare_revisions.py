"""The revision comparison alternates runs of one bench script from two trees and compares their ratios."""
from __future__ import annotations

import csv

import pytest

from tests.speed.helpers import load_script


@pytest.mark.slow
def test_compares_the_ratios_of_this_tree_and_another_revision(tmp_path):
    """Against HEAD's committed tree (taken out of git): the same code, so every method of the smoke run
    appears once with both ratios, and the change is their quotient."""
    compare = load_script("compare_revisions")
    out = tmp_path / "compare.csv"
    compare.main(["--against", "HEAD", "--rounds", "1", "--out", str(out), "--", "--smoke", "--methods", "vhr,vaf"])
    with out.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == compare.COLUMNS
        rows = list(reader)
    assert sorted(r["method"] for r in rows) == ["none", "vaf", "vhr"]
    for r in rows:
        assert r["rounds"] == "1" and r["against"] == "HEAD" and r["script"] == "speed/bench_inmodel.py"
        there, here = float(r["ratio_there"]), float(r["ratio_here"])
        assert float(r["change"]) == pytest.approx(here / there - 1, abs=2e-4)
        assert r["within"] == str(abs(float(r["change"])) <= 0.05)
    assert next(r for r in rows if r["method"] == "none")["change"] == "0"


def test_bad_arguments_are_one_line(capsys):
    compare = load_script("compare_revisions")
    with pytest.raises(SystemExit):
        compare.main(["--against", "HEAD", "--rounds", "0"])
    assert "--rounds must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="cannot take revision no-such-rev out of git"):
        compare.main(["--against", "no-such-rev", "--rounds", "1", "--", "--smoke"])
