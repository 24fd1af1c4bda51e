"""Per-sample cost of OPERA and AGLA against vanilla greedy on the main job's samples (issue 26 §2).

toy-llava on the toy world: POPE random (the llava protocol: a one-word answer, 128 tokens at most) and
CHAIR (short64: 64 tokens), one batch of `--pope` / `--chair` samples per call, as `halluc run` batches
them (64). On a shared machine the seconds drift, so the methods run in turns, `--rounds` times, in one
process, and each method's ratio is taken against the vanilla run of the same round; the script prints
the median ratio per method and benchmark, and with `--profile DIR` writes a cProfile of each method's
last run. Also reported for OPERA: the search steps and candidate rows per step of the last run.
`beam5` is vanilla 5-beam search; HALC (its own 3 beams; offline, the attention detector and the likelihood matcher) is
compared with it and with OPERA in the same rounds. `--out` appends one CSV row per method, benchmark
and round: benchmark, method, ms_per_sample, vanilla_ms, ratio (to vanilla greedy), ratio_to_beam5.

    python speed/bench_search_cost.py --pope 64 --chair 32 --rounds 2
    python speed/bench_search_cost.py --methods beam5,opera,halc --pope 8 --chair 4 --rounds 1 --out runs/search.csv
"""
from __future__ import annotations

import argparse
import cProfile
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import halluc  # noqa: E402
from halluc.benchmarks.paths import data_home  # noqa: E402
from halluc.engine import opera_search  # noqa: E402

POPE_SUFFIX = "\nAnswer the question using a single word or phrase."
CHAIR_PROMPT = "Please describe this image in detail."
PARAMS = {"agla": {"matcher": "lvlm-attention"},  # the main job's AGLA on toy-llava (no BLIP weights)
          "halc": {"detector": "lvlm-attention", "matcher": "lvlm-likelihood"},  # no DINO / BLIP weights offline
          "beam5": {"num_beams": 5}}
UNBATCHED = "opera-per-sample"  # OPERA with one sample per search, as before its search was batched
BEAM5 = "beam5"  # vanilla 5-beam search


def world_samples(pope: int, chair: int) -> dict[str, tuple[list, list[str], int]]:
    """(images, prompts, max_new_tokens) per benchmark, from the toy world in the data home (rendered there
    on first use, as `halluc run` does)."""
    from PIL import Image

    from halluc.world.benchmark import eval_config, prepare_world_benchmarks
    from halluc.world.model import TRAIN_WORLD

    root = prepare_world_benchmarks(data_home(), eval_config(TRAIN_WORLD)).root
    questions = [json.loads(line) for line in (root / "pope" / "coco_pope_random.json").open()][:pope]
    load = lambda name: Image.open(root / "val" / "images" / name).convert("RGB")  # noqa: E731
    captions = sorted((root / "val" / "images").glob("*.png"))[:chair]
    return {"pope": ([load(q["image"]) for q in questions], [q["text"] + POPE_SUFFIX for q in questions], 128),
            "chair": ([load(p.name) for p in captions], [CHAIR_PROMPT] * len(captions), 64)}


class StepCounter:
    """Counts OPERA's candidate steps and the rows each ran."""

    def __init__(self):
        self.steps, self.rows = 0, 0
        self._real = opera_search.Rows.forward

    def __enter__(self):
        counter = self

        def forward(rows, sequences, new=1):
            if new == 1:
                counter.steps, counter.rows = counter.steps + 1, counter.rows + sequences.shape[0]
            return counter._real(rows, sequences, new)

        opera_search.Rows.forward = forward
        return self

    def __exit__(self, *exc):
        opera_search.Rows.forward = self._real


def timed(lvlm, method: str, images, prompts, max_new_tokens: int, profile: Path | None):
    if method == UNBATCHED:
        from halluc.interventions.opera import OPERA

        OPERA.batched_search = False
        try:
            return timed(lvlm, "opera", images, prompts, max_new_tokens, profile)
        finally:
            OPERA.batched_search = True
    profiler = cProfile.Profile() if profile else None
    with StepCounter() as counter:
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        halluc.generate(lvlm, images, prompts, "none" if method == BEAM5 else method, max_new_tokens=max_new_tokens,
                        **PARAMS.get(method, {}))
        if profiler:
            profiler.disable()
        seconds = (time.perf_counter() - start) / len(prompts)
    if profiler:
        profiler.dump_stats(str(profile))
    return seconds, counter


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="opera,agla", help=f"also: {UNBATCHED}")
    parser.add_argument("--pope", type=int, default=64)
    parser.add_argument("--chair", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", type=Path, default=None, help="folder for one .prof per method and benchmark")
    parser.add_argument("--out", type=Path, default=None, help="CSV file the rows are appended to")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lvlm = halluc.load("toy-llava", device="cpu")
    methods = args.methods.split(",")
    report = {}
    for bench, (images, prompts, tokens) in world_samples(args.pope, args.chair).items():
        if not prompts:
            continue
        halluc.generate(lvlm, images[:2], prompts[:2], "none", max_new_tokens=tokens)  # warm-up
        ratios = {m: [] for m in methods}
        for _ in range(args.rounds):
            base, _ = timed(lvlm, "none", images, prompts, tokens, None)
            measured = {}
            for method in methods:
                path = args.profile / f"{method}_{bench}.prof" if args.profile else None
                seconds, counter = timed(lvlm, method, images, prompts, tokens, path)
                ratios[method].append(seconds / base)
                measured[method] = seconds
                line = (f"{bench} {method}: {seconds * 1e3:.1f} ms/sample, vanilla {base * 1e3:.1f} ms: "
                        f"{seconds / base:.2f}x")
                if counter.steps:
                    line += f"; {counter.steps} steps, {counter.rows / counter.steps:.0f} rows/step"
                print(line, flush=True)
            if args.out:
                write_rows(args.out, bench, base, measured)
        report[bench] = {m: statistics.median(r) for m, r in ratios.items()}
        print(bench, {m: f"{r:.2f}x" for m, r in report[bench].items()}, flush=True)
    return report


def write_rows(path: Path, bench: str, base: float, measured: dict[str, float]) -> None:
    """One CSV row per method of one round (ratios within the round: the machine's drift cancels)."""
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    beam5 = measured.get(BEAM5)
    with path.open("a", newline="") as f:
        out = csv.writer(f)
        if new:
            out.writerow(["benchmark", "method", "ms_per_sample", "vanilla_ms", "ratio", "ratio_to_beam5", "date"])
        for method, seconds in measured.items():
            out.writerow([bench, method, f"{seconds * 1e3:.1f}", f"{base * 1e3:.1f}", f"{seconds / base:.3f}",
                          f"{seconds / beam5:.3f}" if beam5 else "", time.strftime("%Y-%m-%d %H:%M:%S")])


if __name__ == "__main__":
    main()
