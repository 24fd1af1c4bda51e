"""Throughput of the main job (`halluc run` with no arguments): toy-llava on the toy world, per method.

For vanilla and every method of the main job, in one process and one after the other, the script
runs the same samples through `halluc.api.run` (the real path: sample logs, fsync, scoring) with
batch size 1 (the main job before batching) and with the main job's batch size, on
    POPE random (--pope N questions, the llava protocol: short answers, prefill-bound) and
    CHAIR short64 (--chair M captions, 64 tokens: decode-bound),
and, with `--against REV` (default a8f9fc0: the code issue 17's audit measured, whose main job ran
batch 1), the same samples through that revision's code at its main job's batch size: its tree is
taken out of git (`git archive`) and run with this interpreter in a subprocess, in turns with this
code's runs. One CSV row per method, benchmark and configuration:
    method, benchmark, code, batch, samples, seconds_per_sample, samples_per_second, speedup,
    speedup_vs_reference, threads, device, torch, transformers, halluc, git_commit, date
`code` is "current" (this working tree) or the reference revision; `speedup` is samples per second
over the same method's batch-1 row of this code, `speedup_vs_reference` over the reference revision's
row (empty for a method that revision does not have). Seconds are those `halluc.run` records: time inside `generate`.

    python speed/bench_main_job.py                       # the main job's methods, 192 POPE / 24 CHAIR samples
    python speed/bench_main_job.py --methods none,vcd --pope 32 --chair 8 --against none --out /tmp/main.csv
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import halluc  # noqa: E402
from speed.common import csv_rows, provenance, reference_tree  # noqa: E402

COLUMNS = ["method", "benchmark", "code", "batch", "samples", "seconds_per_sample", "samples_per_second", "speedup",
           "speedup_vs_reference", "threads", "device", "torch", "transformers", "halluc", "git_commit", "date"]
AUDITED = "a8f9fc0"  # the code issue 17's audit timed (`halluc run` then ran batch 1)
AUDITED_BATCH = 1
# run inside the reference tree: its own `halluc.run`, the same samples; prints seconds per sample or null.
# Its first batch runs once untimed first, as this code's runner does for every configuration, so neither
# side's timing holds the process's one-time costs.
REFERENCE_RUN = """
import json, sys, tempfile, torch
from pathlib import Path
import halluc
method, benchmark, limit, splits, batch, threads = sys.argv[1:7]
torch.set_num_threads(int(threads))
def options(limit, name):
    return halluc.RunOptions(dataset="world", limit=limit, splits=tuple(splits.split(",")) if splits else None,
                             batch_size=int(batch), out=Path(tempfile.mkdtemp()) / name, baseline=False, device="cpu")
try:
    halluc.run("toy-llava", [method], benchmark, options(min(int(limit), int(batch)), "warm-up"))
    _, rows = halluc.run("toy-llava", [method], benchmark, options(int(limit), "run"))
except Exception as error:  # a method this revision does not have
    print(json.dumps(None)); print(error, file=sys.stderr)
else:
    print(json.dumps(rows[0]["seconds_per_sample"]))
"""


def main(argv=None) -> None:
    from halluc.cli.run import MAIN_JOB_BATCH, TOY_METHODS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(("none", *TOY_METHODS)))
    p.add_argument("--pope", type=int, default=192, help="POPE random questions per configuration (3 batches of 64)")
    p.add_argument("--chair", type=int, default=24, help="CHAIR short64 captions per configuration")
    p.add_argument("--batch", type=int, default=MAIN_JOB_BATCH, help="the batch size compared with 1")
    p.add_argument("--against", default=AUDITED, help="reference revision run at --against-batch ('none': skip)")
    p.add_argument("--against-batch", type=int, default=AUDITED_BATCH, help="the reference's main-job batch size")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", default=str(REPO / "runs" / "bench_main_job.csv"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = provenance(torch.device("cpu"))
    shown = ["method", "benchmark", "code", "batch", "samples_per_second", "speedup", "speedup_vs_reference"]
    with csv_rows(Path(args.out), COLUMNS, shown) as write, tempfile.TemporaryDirectory() as tmp:
        reference = None if args.against == "none" else reference_tree(args.against, Path(tmp) / "reference")
        for method in args.methods.split(","):
            for benchmark, limit, splits in (("pope", args.pope, ("random",)), ("chair", args.chair, None)):
                fixed = {"method": method, "benchmark": benchmark, "samples": limit, "threads": args.threads, **info}
                reference_rate = None
                if reference is not None:
                    seconds = run_reference(reference, method, benchmark, limit, splits, args.against_batch,
                                            args.threads)
                    reference_rate = 1 / seconds if seconds else None
                    write(row(fixed, args.against, args.against_batch, seconds, None, reference_rate))
                batch_1_rate = None
                for batch in (1, args.batch):
                    options = halluc.RunOptions(dataset="world", limit=limit, splits=splits, batch_size=batch,
                                                out=Path(tmp) / f"{method}-{benchmark}-{batch}", baseline=False,
                                                device="cpu")
                    _, rows = halluc.run("toy-llava", [method], benchmark, options)
                    seconds = rows[0]["seconds_per_sample"]
                    batch_1_rate = batch_1_rate or 1 / seconds
                    write(row(fixed, "current", batch, seconds, batch_1_rate, reference_rate))


def row(fixed: dict, code: str, batch: int, seconds, batch_1_rate, reference_rate) -> dict:
    """One CSV row: `fixed` columns, this configuration's rate and its speedups over this code's batch-1
    rate and the reference revision's rate (None where there is none)."""
    rate = 1 / seconds if seconds else None
    return {**fixed, "code": code, "batch": batch, "seconds_per_sample": seconds, "samples_per_second": rate,
            "speedup": rate / batch_1_rate if rate and batch_1_rate else None,
            "speedup_vs_reference": rate / reference_rate if rate and reference_rate else None}


def run_reference(tree: Path, method: str, benchmark: str, limit: int, splits, batch: int, threads: int):
    """Seconds per sample of the reference code's run, or None for a method it does not have."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", REFERENCE_RUN, method, benchmark, str(limit),
                           ",".join(splits or ()), str(batch), str(threads)],
                          cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the reference run of {method} on {benchmark} failed: "
                         f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
