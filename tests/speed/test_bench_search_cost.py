"""The OPERA/AGLA cost script times each method against vanilla on the main job's samples and counts OPERA's steps."""
from __future__ import annotations

from tests.speed.helpers import load_script


def test_ratios_per_method_and_benchmark(capsys):
    bench = load_script("bench_search_cost")
    report = bench.main(["--pope", "2", "--chair", "1", "--rounds", "1", "--threads", "1"])
    assert set(report) == {"pope", "chair"}
    for ratios in report.values():
        assert set(ratios) == {"opera", "agla"} and all(r > 0 for r in ratios.values())
    out = capsys.readouterr().out
    assert "pope opera:" in out and "rows/step" in out and "chair agla:" in out
