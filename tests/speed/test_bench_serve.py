"""The server's load benchmark: a row per method and mode, throughput against the sequential row, latency
percentiles, batching that happened, and concurrent answers equal to the sequential ones."""
from __future__ import annotations

import csv

import pytest

from tests.speed.helpers import load_script


def test_writes_sequential_and_concurrent_rows(tmp_path):
    bench = load_script("bench_serve")
    out = tmp_path / "serve.csv"
    bench.main(["--methods", "none", "--requests", "8", "--clients", "4", "--max-wait-ms", "200", "--warmup", "0",
                "--threads", "1", "--time-limit", "300", "--out", str(out)])
    with out.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == bench.COLUMNS
        sequential, concurrent = list(reader)
    assert (sequential["mode"], sequential["clients"], sequential["max_wait_ms"]) == ("sequential", "1", "0")
    assert (concurrent["mode"], concurrent["clients"]) == ("concurrent", "4")
    for row in (sequential, concurrent):
        assert row["completed"] == row["requests"] == "8" and row["timed_out"] == "0"
        assert float(row["requests_per_second"]) == pytest.approx(8 / float(row["seconds"]), rel=1e-4)
        assert 0 < float(row["p50_ms"]) <= float(row["p95_ms"])
        assert row["answers_equal"] == "1"
    assert sequential["batches"] == "8" and int(concurrent["batches"]) < 8  # concurrent requests shared batches
    assert float(concurrent["speedup_vs_sequential"]) == pytest.approx(
        float(concurrent["requests_per_second"]) / float(sequential["requests_per_second"]), rel=1e-4)


def test_the_time_limit_stops_new_requests(tmp_path):
    bench = load_script("bench_serve")
    out = tmp_path / "serve.csv"
    bench.main(["--methods", "none", "--requests", "400", "--clients", "2", "--warmup", "0", "--threads", "1",
                "--time-limit", "0.5", "--out", str(out)])
    rows = list(csv.DictReader(out.open()))
    assert all(r["timed_out"] == "1" and 0 < int(r["completed"]) < 400 for r in rows)


def test_the_workload_asks_six_questions_per_scene():
    bench = load_script("bench_serve")
    pairs = bench.workload(12)
    assert len(pairs) == 12 and len({uri for uri, _ in pairs}) == 2
    assert all(q.startswith("Is there a ") for _, q in pairs)
    assert bench.percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
