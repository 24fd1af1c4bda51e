"""Wall-clock time of the main job, `halluc run` with no arguments, against its 3-minute goal.

Each round runs `halluc run --out TMP [ARGS]` in a fresh process (imports, model loading, generation, the
leaderboard's bootstrap: what a user waits for) and appends one CSV row:
    round, wall_seconds, generation_seconds, rest_seconds, target_seconds, within_target,
    steering_cached, load_average, args, device, torch, transformers, halluc, git_commit, date
`generation_seconds` is the run's own "elapsed" at its last progress line; `rest_seconds` the remainder
(start-up, scoring, the bootstrap and the printed tables). `steering_cached` says whether VTI's steering
vectors were already in the cache (computing them adds about 16 s the first time); `load_average` is the
1-minute load when the round started: on a busy machine the seconds are not the idle figure the goal means.

    python speed/bench_main_job_wall.py --rounds 2
    python speed/bench_main_job_wall.py --out /tmp/wall.csv -- --limit 6 --method vcd   # a smaller job
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from halluc.engine.steering import cache_home  # noqa: E402
from speed.common import csv_rows, provenance  # noqa: E402

COLUMNS = ["round", "wall_seconds", "generation_seconds", "rest_seconds", "target_seconds", "within_target",
           "steering_cached", "load_average", "args", "device", "torch", "transformers", "halluc", "git_commit",
           "date"]
TARGET_SECONDS = 180.0  # the main job's goal on 2 idle cores
ELAPSED = re.compile(r"(?:(\d+)m)?(\d+)s elapsed · done")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--target", type=float, default=TARGET_SECONDS, help="the goal in seconds")
    p.add_argument("--out", default=str(REPO / "runs" / "bench_main_job_wall.csv"))
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    info = provenance(torch.device("cpu"))
    shown = ["round", "wall_seconds", "generation_seconds", "rest_seconds", "within_target", "load_average"]
    with csv_rows(Path(args.out), COLUMNS, shown) as write:
        for number in range(1, args.rounds + 1):
            write({"round": number, **timed_run(extra, args.target), "args": " ".join(extra), **info})


def timed_run(extra: list[str], target: float) -> dict:
    """One `halluc run` in a fresh process: its wall seconds, split into generation and the rest."""
    cached = cache_home().is_dir() and any(cache_home().iterdir())
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "halluc", "run", "--out", str(Path(tmp) / "run"), *extra],
                              cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"halluc run failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    found = ELAPSED.findall(done.stderr + done.stdout)
    generation = float(int(found[-1][0] or 0) * 60 + int(found[-1][1])) if found else None
    return {"wall_seconds": round(wall, 2), "generation_seconds": generation,
            "rest_seconds": round(wall - generation, 2) if generation is not None else None,
            "target_seconds": target, "within_target": wall <= target, "steering_cached": cached,
            "load_average": round(load, 2)}


if __name__ == "__main__":
    main()
