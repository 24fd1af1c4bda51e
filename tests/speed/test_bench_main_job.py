"""The main job's throughput script writes one well-formed row per method, benchmark and configuration,
and times a reference revision's code (taken out of git) beside this one."""
from __future__ import annotations

import csv

import pytest

from tests.speed.helpers import load_script


def test_writes_a_row_per_method_benchmark_and_batch(tmp_path):
    bench = load_script("bench_main_job")
    out = tmp_path / "main.csv"
    bench.main(["--methods", "none,vcd", "--pope", "4", "--chair", "2", "--batch", "4", "--threads", "1",
                "--against", "none", "--out", str(out)])
    with out.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == bench.COLUMNS
        rows = list(reader)
    keys = [(r["method"], r["benchmark"], r["code"], r["batch"]) for r in rows]
    assert keys == [(m, b, "current", n) for m in ("none", "vcd") for b in ("pope", "chair") for n in ("1", "4")]
    for r in rows:
        assert float(r["samples_per_second"]) == pytest.approx(1 / float(r["seconds_per_sample"]), rel=1e-4)
        assert r["samples"] == ("4" if r["benchmark"] == "pope" else "2")
        if r["batch"] == "1":
            assert float(r["speedup"]) == 1.0
        else:  # over the same method's batch-1 row
            single = next(s for s in rows if (s["method"], s["benchmark"], s["batch"])
                          == (r["method"], r["benchmark"], "1"))
            assert float(r["speedup"]) == pytest.approx(float(r["samples_per_second"])
                                                        / float(single["samples_per_second"]), rel=1e-4)



@pytest.mark.slow
def test_times_a_reference_revision_beside_this_code(tmp_path):
    """`--against REV` runs REV's own code (here HEAD's committed tree, taken out of git) on the same
    samples before this code's rows; a method that revision lacks gives None, not a failure."""
    bench = load_script("bench_main_job")
    out = tmp_path / "main.csv"
    bench.main(["--methods", "none", "--pope", "2", "--chair", "1", "--batch", "2", "--threads", "1",
                "--against", "HEAD", "--out", str(out)])
    rows = list(csv.DictReader(out.open()))
    assert [(r["benchmark"], r["code"], r["batch"]) for r in rows] == [
        (b, code, n) for b in ("pope", "chair") for code, n in (("HEAD", "1"), ("current", "1"), ("current", "2"))]
    for r in rows:
        reference = next(x for x in rows if x["benchmark"] == r["benchmark"] and x["code"] == "HEAD")
        assert float(r["speedup_vs_reference"]) == pytest.approx(
            float(r["samples_per_second"]) / float(reference["samples_per_second"]), rel=1e-4)
    tree = bench.reference_tree("HEAD", tmp_path / "tree")
    assert (tree / "halluc" / "__init__.py").is_file()
    assert bench.run_reference(tree, "no-such-method", "pope", 1, ("random",), 1, 1) is None


def test_an_unknown_reference_revision_is_one_line(tmp_path):
    bench = load_script("bench_main_job")
    with pytest.raises(SystemExit, match="cannot take revision no-such-rev out of git"):
        bench.reference_tree("no-such-rev", tmp_path / "tree")
