"""Throughput of the main job (`halluc run` with no arguments): toy-llava on the toy world, per method.

For vanilla and every method of the main job, in one process and one after the other, the script
runs the same samples through `halluc.api.run` (the real path: sample logs, fsync, scoring) with
batch size 1 (the main job before batching) and with the main job's batch size, on
    POPE random (--pope N questions, the llava protocol: short answers, prefill-bound) and
    CHAIR short64 (--chair M captions, 64 tokens: decode-bound),
and appends one CSV row per method, benchmark and batch size:
    method, benchmark, batch, samples, seconds_per_sample, samples_per_second, speedup, threads,
    device, torch, transformers, halluc, git_commit, date
`speedup` is samples per second over the same method's batch-1 row of this run.

    python speed/bench_main_job.py                       # the main job's methods, 96 POPE / 24 CHAIR samples
    python speed/bench_main_job.py --methods none,vcd --pope 32 --chair 8 --out /tmp/main.csv
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import halluc  # noqa: E402
from speed.common import csv_rows, provenance  # noqa: E402

COLUMNS = ["method", "benchmark", "batch", "samples", "seconds_per_sample", "samples_per_second", "speedup",
           "threads", "device", "torch", "transformers", "halluc", "git_commit", "date"]


def main(argv=None) -> None:
    from halluc.cli.run import MAIN_JOB_BATCH, TOY_METHODS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(("none", *TOY_METHODS)))
    p.add_argument("--pope", type=int, default=96, help="POPE random questions per configuration")
    p.add_argument("--chair", type=int, default=24, help="CHAIR short64 captions per configuration")
    p.add_argument("--batch", type=int, default=MAIN_JOB_BATCH, help="the batch size compared with 1")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", default=str(REPO / "runs" / "bench_main_job.csv"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = provenance(torch.device("cpu"))
    shown = ["method", "benchmark", "batch", "samples_per_second", "speedup"]
    with csv_rows(Path(args.out), COLUMNS, shown) as write, tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            for benchmark, limit, splits in (("pope", args.pope, ("random",)), ("chair", args.chair, None)):
                base = None
                for batch in (1, args.batch):
                    options = halluc.RunOptions(dataset="world", limit=limit, splits=splits, batch_size=batch,
                                                out=Path(tmp) / f"{method}-{benchmark}-{batch}", baseline=False,
                                                device="cpu")
                    _, rows = halluc.run("toy-llava", [method], benchmark, options)
                    seconds = rows[0]["seconds_per_sample"]
                    rate = 1 / seconds
                    base = base or rate
                    write({"method": method, "benchmark": benchmark, "batch": batch, "samples": limit,
                           "seconds_per_sample": seconds, "samples_per_second": rate, "speedup": rate / base,
                           "threads": args.threads, **info})


if __name__ == "__main__":
    main()
