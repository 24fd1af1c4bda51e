"""Decode ratios of this tree against another revision's, in alternating runs.

A refactor that claims to keep each method's cost (issue 21's hooks with a context, say) is checked
here: each round runs a benchmark script once from the other revision's files (taken out of git with
`git archive`, nothing checked out) and once from this tree, in turns, in fresh processes, so a slow spell
of a shared machine hits both alike. Each script already divides every method's time by vanilla's of
the same run (`ratio`), so machine speed cancels; this compares those ratios across revisions:

    change = median ratio here / median ratio there − 1      (per method and model, over the rounds)

One CSV row per method and model (--out): script, method, model, rounds, ratio_there, ratio_here,
change, within (|change| ≤ --tolerance), against, git_commit, date. A method the other revision does not
have is left out.

    python speed/compare_revisions.py --against 1e08a78 --rounds 3 -- --models small --tokens 16 --reps 2
    python speed/compare_revisions.py --script speed/bench_decoding.py --against 1e08a78 -- --models small
"""
from __future__ import annotations

import argparse
import csv
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from speed.common import csv_rows, git_commit, reference_tree  # noqa: E402

COLUMNS = ["script", "method", "model", "rounds", "ratio_there", "ratio_here", "change", "within", "against",
           "git_commit", "date"]


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    passed = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", required=True, help="the other revision (a commit, tag or branch)")
    p.add_argument("--script", default="speed/bench_inmodel.py", help="a bench script that writes `ratio` rows")
    p.add_argument("--rounds", type=int, default=3, help="alternating runs of each tree")
    p.add_argument("--tolerance", type=float, default=0.05, help="largest |change| counted as unchanged")
    p.add_argument("--out", default=str(REPO / "runs" / "compare_revisions.csv"))
    args = p.parse_args(own)
    if args.rounds < 1 or not 0 < args.tolerance < 1:
        p.error("--rounds must be at least 1 and --tolerance in (0, 1)")
    return args, passed


def run_script(tree: Path, script: str, passed: list[str], out: Path) -> dict[tuple[str, str], float]:
    """{(method, model): ratio} from one run of `tree`'s copy of `script` (its own halluc imported)."""
    done = subprocess.run([sys.executable, str(tree / script), *passed, "--out", str(out)], cwd=tree,
                          env={**os.environ, "PYTHONPATH": str(tree), "HALLUC_PROGRESS": "0"},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{script} failed in {tree}:\n{done.stderr.strip()[-2000:]}")
    with out.open() as f:
        rows = list(csv.DictReader(f))
    out.unlink()
    # a script that times one method several ways (bench_decoding's modes, bench_attention_methods' variants)
    # names the way in its own column: it is part of the key, so the ways are compared apart
    way = next((c for c in ("mode", "variant") if rows and c in rows[0]), None)
    return {(r["method"] if way is None else f"{r['method']} ({r[way]})", r["model"]): float(r["ratio"])
            for r in rows}


def compare(args, passed: list[str]) -> list[dict]:
    ratios: dict[str, dict[tuple[str, str], list[float]]] = {"there": defaultdict(list), "here": defaultdict(list)}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"there": reference_tree(args.against, Path(tmp) / "there"), "here": REPO}
        for round_ in range(args.rounds):
            for side in ("there", "here") if round_ % 2 == 0 else ("here", "there"):
                got = run_script(trees[side], args.script, passed, Path(tmp) / f"{side}.csv")
                for key, ratio in got.items():
                    ratios[side][key].append(ratio)
                print(f"round {round_ + 1}/{args.rounds}: {side} done", file=sys.stderr)
    rows = []
    for key in sorted(set(ratios["there"]) & set(ratios["here"])):
        there, here = statistics.median(ratios["there"][key]), statistics.median(ratios["here"][key])
        change = here / there - 1
        rows.append({"script": args.script, "method": key[0], "model": key[1], "rounds": args.rounds,
                     "ratio_there": round(there, 4), "ratio_here": round(here, 4), "change": round(change, 4),
                     "within": abs(change) <= args.tolerance, "against": args.against})
    return rows


def main(argv=None) -> int:
    args, passed = parse_args(argv)
    rows = compare(args, passed)
    stamp = {"git_commit": git_commit(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    with csv_rows(Path(args.out), COLUMNS, ("method", "model", "ratio_there", "ratio_here", "change",
                                            "within")) as write:
        for row in rows:
            write({**row, **stamp})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
