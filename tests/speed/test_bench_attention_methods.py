"""The PAI / VAR / TAME / FarSight decode-time benchmark's smoke configuration writes well-formed rows with
provenance."""
from __future__ import annotations

import csv

import pytest

from tests.speed.helpers import load_script


def load_bench():
    return load_script("bench_attention_methods")


def test_smoke_writes_well_formed_rows(tmp_path):
    bench = load_bench()
    out = bench.main(["--smoke", "--tokens", "3", "--out", str(tmp_path / "b.csv")])
    with out.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == bench.COLUMNS
        rows = {r["variant"].split(" ")[0]: r for r in reader}
    assert set(rows) == {"none", "pai", "pai-boost", "var", "tame", "farsight"}
    for r in rows.values():
        assert r["model"] == "tiny-llava" and float(r["ms_per_token"]) > 0 and float(r["prefill_ms"]) > 0
        assert all(r[c] for c in ("device", "torch", "transformers", "triton", "halluc", "git_commit", "date"))
    vanilla = rows["none"]
    assert float(vanilla["ratio"]) == 1.0 and vanilla["impl"] == "sdpa" and vanilla["edited_calls"] == "0"
    assert rows["pai"]["rows_per_sample"] == "2" and rows["pai-boost"]["rows_per_sample"] == "1"  # guidance row
    for v in ("pai", "pai-boost", "var"):  # 2 layers x (prefill + 2 decode steps) on the edit path
        assert rows[v]["edited_calls"] == "6" and rows[v]["impl"] in ("torch", "triton")
    assert rows["tame"]["edited_calls"] == "0" and rows["tame"]["impl"] == "sdpa"  # a scale alone stays on SDPA
    assert rows["farsight"]["edited_calls"] == "2" and rows["farsight"]["impl"] in ("torch", "triton")  # prefill only
    # appending keeps one header; the backend is restored after each call
    bench.main(["--smoke", "--tokens", "2", "--variants", "var", "--out", str(out)])
    lines = out.read_text().splitlines()
    assert sum(line.startswith("method,") for line in lines) == 1 and len(lines) == 1 + 6 + 2
    from halluc.kernels import backend, dispatch
    assert backend.attention is dispatch.attention


def test_refuses_bad_input(tmp_path):
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.main(["--variants", "nope", "--out", str(tmp_path / "b.csv")])
    if not bench.torch.cuda.is_available():
        with pytest.raises(SystemExit, match="needs a GPU"):
            bench.main(["--models", "7b", "--out", str(tmp_path / "b.csv")])
