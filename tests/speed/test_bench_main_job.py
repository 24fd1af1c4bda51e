"""The main job's throughput script writes one well-formed row per method, benchmark and batch size."""
from __future__ import annotations

import csv

import pytest

from tests.speed.helpers import load_script


def test_writes_a_row_per_method_benchmark_and_batch(tmp_path):
    bench = load_script("bench_main_job")
    out = tmp_path / "main.csv"
    bench.main(["--methods", "none,vcd", "--pope", "4", "--chair", "2", "--batch", "4", "--threads", "1",
                "--out", str(out)])
    with out.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == bench.COLUMNS
        rows = list(reader)
    keys = [(r["method"], r["benchmark"], r["batch"]) for r in rows]
    assert keys == [(m, b, n) for m in ("none", "vcd") for b in ("pope", "chair") for n in ("1", "4")]
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
