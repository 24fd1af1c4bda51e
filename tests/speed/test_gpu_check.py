"""The GPU acceptance script: its CPU dry run (the same steps at tiny sizes) writes every file and one table;
a missing dependency stops it before any step with exit 2; a step past its cap is stopped and reported; the
table's ratios come from the CSV rows."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.speed.helpers import SCRIPTS, load_script

REPO = SCRIPTS.parent


@pytest.fixture(scope="module")
def gpu_check():
    return load_script("gpu_check")


def run_script(*args, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh"), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHON": sys.executable, **(env or {})})


@pytest.mark.slow
def test_dry_run_runs_every_step_and_writes_one_table(tmp_path, gpu_check):
    out = tmp_path / "check"
    done = run_script("--dry-run", env={"OUT": str(out)})  # $OUT is the default output folder
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    env = json.loads((out / "environment.json").read_text())
    assert env["dry_run"] and [s["step"] for s in env["steps"]] == [s.name for s in gpu_check.steps(True, 1)]
    assert all(s["status"] == "passed" for s in env["steps"])
    for name in ("bench_attention", "bench_e2e", "bench_inmodel", "bench_decoding"):
        with (out / f"{name}.csv").open() as f:
            assert list(csv.DictReader(f)), name
    assert (out / "tests-cuda.xml").exists() and (out / "tests-contract.xml").exists()
    assert {p.name for p in (out / "logs").iterdir()} == {f"{s['step']}.log" for s in env["steps"]}
    summary = (out / "summary.md").read_text()
    lines = summary.splitlines()
    assert summary.startswith("**DRY RUN on CPU") and sum(line.startswith("|---") for line in lines) == 1  # one table
    rows = [line for line in lines if line.startswith("| ")][1:]  # after the header
    assert {row.split(" | ")[0].lstrip("| ") for row in rows} >= {
        "tests-cuda", "tests-contract", "attention prefill", "attention decode", "end to end", "in-model method",
        "decoding method"}
    contract = next(row for row in rows if row.startswith("| tests-contract"))
    assert "1 passed, 0 failed, 0 skipped" in contract
    cuda_tests = next(row for row in rows if row.startswith("| tests-cuda"))
    assert ", 0 failed, " in cuda_tests
    if not torch.cuda.is_available():  # every CUDA test skips cleanly, the 2-GPU one named with its reason
        assert "| 0 passed, 0 failed, " in cuda_tests
        assert "test_dispatched_over_two_gpus_gives_the_same_tokens: skipped (needs 2 GPUs)" in cuda_tests
    assert summary in done.stdout


def test_a_missing_dependency_stops_it_before_any_step(tmp_path):
    fake = tmp_path / "fake"
    (fake / "triton").mkdir(parents=True)
    (fake / "triton" / "__init__.py").write_text("raise ImportError('triton is not installed here')\n")
    out = tmp_path / "check"
    done = run_script("--dry-run", "--out", str(out), env={"PYTHONPATH": str(fake)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gpu-check: missing dependency: triton cannot be imported (ImportError: triton is not installed here)",
        f"gpu-check: that was {sys.executable}; set PYTHON=/path/to/python to use another"]
    assert "Traceback" not in done.stderr and not out.exists()


def test_no_python_is_one_clear_line(tmp_path):
    done = run_script("--dry-run", env={"PYTHON": str(tmp_path / "no-python")})
    assert done.returncode == 2 and done.stderr.startswith("gpu-check: missing dependency: no ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_without_a_gpu_only_the_dry_run_runs(tmp_path):
    done = run_script("--out", str(tmp_path / "check"))
    assert done.returncode == 2 and "sees no CUDA device" in done.stderr and "--dry-run" in done.stderr
    assert not (tmp_path / "check").exists()


def test_a_step_past_its_cap_is_stopped_and_reported(gpu_check, tmp_path):
    step = gpu_check.Step("bench-inmodel", "sleeps", 2, [sys.executable, "-c", "import time; time.sleep(60)"], {},
                          "bench_inmodel.csv")
    result = gpu_check.run_step(step, tmp_path, cap_s=2)
    assert result["status"] == "timed out" and result["seconds"] < 10
    assert (tmp_path / result["log"]).exists()
    env = {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11", "git_commit": "abc", "date": "today"}
    table = gpu_check.summary(tmp_path, env, [result], dry=False)
    assert table.startswith("**NVIDIA H100 80GB HBM3** (torch 2.11;")
    assert "| bench-inmodel | sleeps | **timed out** after" in table


def test_the_table_divides_halluc_by_each_baseline(gpu_check, tmp_path):
    bench = load_script("bench_attention")
    base = {"kernel": "attention_with_edits", "mode": "decode", "shape": "B1 H32 D128 Tq1 Tk4096 img576",
            "dtype": "bf16", "unit": "ms"}
    rows = [{**base, "provider": p, "edit": e, "metric": "time", "p50": t}
            for p, e, t in [("halluc-triton", "bias", 0.05), ("sdpa", "bias", 0.04), ("flex", "bias", 0.1),
                            ("halluc-triton", "all", 0.06), ("eager", "all", 0.3)]]
    rows.append({**base, "provider": "halluc-triton", "edit": "bias", "metric": "max_abs_err", "p50": 0.002})
    e2e = {"kernel": "llava_generate", "mode": "e2e", "shape": "7B-shaped"}
    rows += [{**e2e, "provider": p, "edit": p, "metric": m, "p50": v}
             for p, m, v in [("sdpa", "generate", 50.0), ("halluc-pai", "generate", 40.0), ("sdpa", "prefill", 100.0),
                             ("halluc-pai", "prefill", 110.0)]]
    with (tmp_path / "bench_attention.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=bench.COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    table = gpu_check.attention_rows(gpu_check.read_csv(tmp_path / "bench_attention.csv"))
    assert table == [
        ["attention decode", "4096 keys, edit bias", "0.05 ms (max err 2.0e-03)",
         "SDPA 0.04 ms (1.25×); FlexAttention 0.1 ms (0.50×)"],
        ["attention decode", "4096 keys, edit all", "0.06 ms", "eager 0.3 ms (0.20×)"],
        ["end to end", "halluc-pai, 7B-shaped", "40 tokens/s, prefill 110 ms",
         "SDPA 50 tokens/s (1.25× the time), prefill 100 ms (1.10×)"],
    ]
