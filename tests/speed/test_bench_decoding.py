"""The decoding benchmark's CPU smoke configuration writes well-formed long-format CSV rows."""
from __future__ import annotations

import csv

import pytest

from tests.speed.helpers import load_script


def load_bench():
    return load_script("bench_decoding")


def test_smoke_writes_well_formed_rows(tmp_path):
    bench = load_bench()
    out = bench.main(["--smoke", "--threads", "1", "--methods", "vcd,opera", "--out", str(tmp_path / "d.csv")])
    with out.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == bench.COLUMNS
        rows = list(reader)
    runs = {(r["method"], r["mode"]) for r in rows}
    assert runs == {("none", "greedy"), ("none", "sample"), ("none", "beam"), ("none-2-rows", "greedy"),
                    ("none-2-rows", "sample"), ("vcd", "greedy"), ("vcd", "sample"), ("opera", "beam")}
    assert len(rows) == len(runs)
    by_run = {(r["method"], r["mode"]): r for r in rows}
    for r in rows:
        assert r["model"] == "tiny-llava" and r["batch"] == "1" and int(r["tokens"]) >= 2
        assert float(r["ms_per_token"]) > 0 and float(r["prefill_ms"]) > 0
        vanilla = float(by_run[("none", r["mode"])]["ms_per_token"])
        assert float(r["ratio"]) == pytest.approx(float(r["ms_per_token"]) / vanilla, rel=1e-4)
        assert all(r[c] for c in ("device", "torch", "transformers", "halluc", "git_commit", "date"))
        assert r["peak_mb"] == ""  # CUDA only
    assert {k: by_run[k]["rows_per_sample"] for k in by_run} == {
        ("none", "greedy"): "1", ("none", "sample"): "1", ("none", "beam"): "5", ("none-2-rows", "greedy"): "2",
        ("none-2-rows", "sample"): "2", ("vcd", "greedy"): "2", ("vcd", "sample"): "2", ("opera", "beam"): "25"}
    # appending keeps one header
    bench.main(["--smoke", "--threads", "1", "--methods", "vcd", "--out", str(out)])
    lines = out.read_text().splitlines()
    assert sum(line.startswith("method,") for line in lines) == 1 and len(lines) == 1 + len(rows) + 6


def test_rejects_unknown_methods(tmp_path):
    with pytest.raises(SystemExit):
        load_bench().main(["--smoke", "--methods", "vdc", "--out", str(tmp_path / "d.csv")])


def test_sid_and_icd_run_as_two_row_methods(tmp_path):
    bench = load_bench()
    out = bench.main(["--smoke", "--threads", "1", "--methods", "icd,sid", "--out", str(tmp_path / "d.csv")])
    with out.open() as f:
        rows = {(r["method"], r["mode"]): r for r in csv.DictReader(f)}
    # SID's default selection layer leaves tiny-llava's 2 layers nothing to hide: skipped there, with the reason
    assert set(rows) == {("none", "greedy"), ("none", "sample"), ("none-2-rows", "greedy"), ("none-2-rows", "sample"),
                         ("icd", "greedy"), ("icd", "sample")}
    assert rows[("icd", "greedy")]["rows_per_sample"] == rows[("icd", "sample")]["rows_per_sample"] == "2"
