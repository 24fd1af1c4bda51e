"""The attention benchmark's CPU smoke configuration writes well-formed long-format CSV rows."""
from __future__ import annotations

import csv

import pytest

from tests.speed.helpers import load_script

pytest.importorskip("triton")


def load_bench():
    return load_script("bench_attention")


def test_smoke_writes_well_formed_rows(tmp_path):
    bench = load_bench()
    out = bench.main(["--smoke", "--edits", "none,all", "--dtype", "fp32", "--out", str(tmp_path / "b.csv")])
    with out.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == bench.COLUMNS
        rows = list(reader)
    micro = [r for r in rows if r["kernel"] == "attention_with_edits"]
    e2e = [r for r in rows if r["kernel"] == "llava_generate"]
    # prefill + 1 decode context; none: 4 providers, all: triton + eager; a time and an error row each
    assert len(micro) == 2 * (4 + 2) * 2
    assert {r["provider"] for r in micro} == set(bench.PROVIDERS)
    assert {r["provider"] for r in e2e} == {"sdpa", "halluc-noedit", "halluc-pai", "halluc-var"}
    assert {(r["metric"], r["unit"]) for r in e2e} == {("prefill", "ms"), ("generate", "tokens/s")}
    for r in rows:
        assert float(r["p50"]) >= 0 and r["dtype"] == "fp32" and r["shape"]
        assert r["mode"] in ("prefill", "decode", "e2e")
        assert all(r[c] for c in ("device", "torch", "triton", "transformers", "git_commit", "date"))
        if r["metric"] == "time":
            assert float(r["p20"]) <= float(r["p50"]) <= float(r["p80"])
        if r["metric"] == "max_abs_err":  # every provider computes the same attention (fp32)
            assert float(r["p50"]) < 1e-4, r
    # appending keeps one header
    bench.main(["--smoke", "--modes", "decode", "--edits", "none", "--providers", "sdpa", "--dtype", "fp32",
                "--out", str(out)])
    lines = out.read_text().splitlines()
    assert sum(line.startswith("kernel,") for line in lines) == 1 and len(lines) == 1 + len(rows) + 2


def test_refuses_to_run_full_size_without_a_gpu(tmp_path):
    bench = load_bench()
    if bench.torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="needs a GPU"):
        bench.main(["--out", str(tmp_path / "b.csv")])
