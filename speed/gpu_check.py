"""The GPU acceptance run: the CUDA tests, then the three speed benchmarks on the 7B-shaped random model,
then one Markdown table of the results, all under one folder. `speed/gpu_check.sh` (or `make gpu-check`)
runs it; `--dry-run` runs the same steps on CPU at tiny sizes (CI runs that, so the script cannot rot).

Steps, each a subprocess stopped at its time cap (SIGINT 10 s before it, so pytest still writes its report;
the caps add up to 7 min 45 s, so the run fits 8 minutes on one H100; what a stopped step wrote is kept):
    tests-cuda       pytest tests/test_cuda.py tests/test_device_map.py: the compiled kernel against the
                     torch reference (shapes, fp32/fp16/bf16, every edit primitive), every method on every
                     family's tiny model with the kernel against the reference, the multi-GPU test (skips on 1)
    tests-contract   HALLUC_TEST_DEVICE=cuda pytest tests/interventions/test_contract.py: every method on every
                     family's tiny model on cuda (greedy, sampling, beam; batch == single; zero strength)
    bench-attention  speed/bench_attention.py: one attention call, prefill 640 and decode at 640 / 4096 keys,
                     LLaVA-1.5-7B-shaped, bf16, against SDPA, FlexAttention and eager
    bench-e2e        speed/bench_attention.py --modes e2e: generate on the 7B-shaped model (32 tokens)
    bench-inmodel    speed/bench_inmodel.py --models 7b
    bench-decoding   speed/bench_decoding.py --models 7b
Output folder (--out; default $OUT, else runs/gpu-check-<UTC time>): summary.md (the table), one CSV per
benchmark, tests-*.xml (JUnit), logs/<step>.log, environment.json. Exit 0 when every step passed, 1 when a
step failed or ran out of time, 2 on a missing dependency (before any step runs). `--steps a,b` runs only
those steps (e.g. one that ran out of time, into a new folder). Without .git (a lent machine gets the working
tree alone), HALLUC_GIT_COMMIT=<commit> names the commit in the table.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import importlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-rs"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # nothing may be fetched (lent GPUs have no network)
DRY_CONTRACT = ["tests/interventions/test_contract.py::test_batch_equals_single[vcd-llava]"]
DRY_CAP_SCALE = 3  # CPU at tiny sizes is no faster than the GPU at full size, and CI machines are shared


@dataclass
class Step:
    name: str
    what: str
    cap_s: int  # time cap on a GPU
    argv: list[str]
    env: dict
    output: str  # the file it writes under the output folder


def steps(dry: bool, workers: int) -> list[Step]:
    """The run's steps; `dry` gives the same steps on CPU at tiny sizes."""
    xdist = ["-n", str(workers)] if workers > 1 else []

    def bench(name: str, gpu: list[str], cpu: list[str]) -> list[str]:
        return [sys.executable, str(REPO / "speed" / f"{name}.py"), *(cpu if dry else gpu)]

    return [
        Step("tests-cuda", "CUDA tests: kernel vs reference, methods on the kernel, multi-GPU", 80,
             [*PYTEST, *xdist, "tests/test_cuda.py", "tests/test_device_map.py",
              *(["-k", "gpu or cuda"] if dry else [])], {}, "tests-cuda.xml"),
        Step("tests-contract", "method contract on every family's tiny model", 105,
             [*PYTEST, *xdist, *(DRY_CONTRACT if dry else ["tests/interventions/test_contract.py"])],
             {"HALLUC_TEST_DEVICE": "cpu" if dry else "cuda"}, "tests-contract.xml"),
        Step("bench-attention", "one attention call vs SDPA / FlexAttention / eager", 90,
             bench("bench_attention", ["--modes", "prefill,decode", "--contexts", "640,4096"],
                   ["--smoke", "--device", "cpu", "--modes", "prefill,decode", "--edits", "none,all",
                    "--dtype", "fp32"]),
             {}, "bench_attention.csv"),
        Step("bench-e2e", "generate on the 7B-shaped model, halluc backend vs SDPA", 35,
             bench("bench_attention", ["--modes", "e2e", "--new-tokens", "32", "--e2e-reps", "2"],
                   ["--smoke", "--device", "cpu", "--modes", "e2e", "--dtype", "fp32"]),
             {}, "bench_e2e.csv"),
        Step("bench-inmodel", "in-model methods' decode time vs vanilla", 70,
             bench("bench_inmodel", ["--models", "7b", "--tokens", "24", "--reps", "2", "--warmup", "1"],
                   ["--smoke", "--device", "cpu", "--methods", "vhr"]),
             {}, "bench_inmodel.csv"),
        Step("bench-decoding", "decoding methods' decode time vs vanilla", 85,
             bench("bench_decoding", ["--models", "7b", "--tokens", "12", "--reps", "2", "--warmup", "1"],
                   ["--smoke", "--device", "cpu", "--methods", "vcd"]),
             {}, "bench_decoding.csv"),
    ]


# ---- preflight: fail fast on a missing dependency -----------------------------------------------
def preflight(dry: bool) -> dict:
    """The environment; or one line per missing dependency on stderr, then SystemExit(2)."""
    problems, versions = [], {}
    for name in ("torch", "triton", "transformers", "accelerate", "PIL", "numpy", "pytest"):
        try:
            versions[name] = getattr(importlib.import_module(name), "__version__", "?")
        except Exception as err:  # ImportError, or a broken install raising something else
            problems.append(f"{name} cannot be imported ({type(err).__name__}: {err})")
    device = "cpu"
    if "torch" in versions:
        import torch
        if not dry and not torch.cuda.is_available():
            problems.append(f"torch {versions['torch']} sees no CUDA device (torch.version.cuda = "
                            f"{torch.version.cuda}); install torch built for this machine's CUDA, or pass --dry-run")
        elif not dry:
            device = torch.cuda.get_device_name(0)
            versions["cuda"] = torch.version.cuda
            versions["gpus"] = torch.cuda.device_count()
    if not problems:
        try:
            importlib.import_module("halluc.api")
            importlib.import_module("halluc.kernels.triton_attention")
        except Exception as err:
            problems.append(f"halluc cannot be imported from {REPO} ({type(err).__name__}: {err})")
    if problems:
        for problem in problems:
            print(f"gpu-check: missing dependency: {problem}", file=sys.stderr)
        print(f"gpu-check: that was {sys.executable}; set PYTHON=/path/to/python to use another", file=sys.stderr)
        raise SystemExit(2)
    return {"device": device, "python": platform.python_version(), **versions}


def xdist_workers(requested: int | None, dry: bool) -> int:
    if dry or requested == 1:
        return 1
    try:
        importlib.import_module("xdist")
    except ImportError:
        return 1
    return requested or max(1, min(12, (os.cpu_count() or 2) - 2))


# ---- running a step ---------------------------------------------------------------------------
def run_step(step: Step, out: Path, cap_s: float) -> dict:
    """Run one step with its log in out/logs; SIGINT shortly before the cap (pytest then still writes its report),
    SIGKILL at the cap."""
    where = f"--junitxml={out / step.output}" if step.output.endswith(".xml") else f"--out={out / step.output}"
    argv = [*step.argv, where]
    env = {**os.environ, **step.env, **OFFLINE, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                              os.environ.get("PYTHONPATH")]))}
    log = out / "logs" / f"{step.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"gpu-check: {step.name} (cap {cap_s:.0f} s): {' '.join(argv[1:])}", flush=True)
    start, cpu_before = time.perf_counter(), _children_cpu()
    with log.open("w") as f:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        grace = min(10.0, cap_s / 5)
        try:
            rc = proc.wait(timeout=cap_s - grace)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGINT)
            try:
                rc = proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu_before
    status = "timed out" if timed_out else ("passed" if rc == 0 else "failed")
    print(f"gpu-check: {step.name} {status} after {seconds:.0f} s ({cpu:.0f} s of CPU; exit {rc}; log {log})",
          flush=True)
    return {"step": step.name, "what": step.what, "status": status, "exit": rc, "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu, 1), "log": str(log.relative_to(out))}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---- the summary table ------------------------------------------------------------------------
def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def junit_counts(path: Path) -> tuple[dict, list[str]]:
    """({passed, failed, skipped}, skip reasons of tests whose name says gpu/cuda) from a JUnit file."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    reasons = []
    if not path.exists():
        return counts, reasons
    for case in ET.parse(path).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
        elif (skip := case.find("skipped")) is not None:
            counts["skipped"] += 1
            if "gpus" in case.get("name", ""):
                reasons.append(f"{case.get('name')}: skipped ({skip.get('message', '').removeprefix('Skipped: ')})")
        else:
            counts["passed"] += 1
    return counts, reasons


def fmt(x: float, unit: str) -> str:
    return f"{x:.3g} {unit}"


def attention_rows(rows: list[dict]) -> list[list[str]]:
    """One row per (mode, keys, edit): the kernel's time and error, then each baseline and kernel/baseline."""
    times = {(r["mode"], r["shape"], r["edit"], r["provider"]): float(r["p50"]) for r in rows if r["metric"] == "time"}
    errors = {(r["mode"], r["shape"], r["edit"], r["provider"]): float(r["p50"]) for r in rows
              if r["metric"] == "max_abs_err"}
    names = {"sdpa": "SDPA", "flex": "FlexAttention", "eager": "eager"}
    table = []
    for mode, shape, edit, provider in times:
        if provider != "halluc-triton":
            continue
        ours = times[mode, shape, edit, provider]
        against = [f"{names[p]} {fmt(times[mode, shape, edit, p], 'ms')} ({ours / times[mode, shape, edit, p]:.2f}×)"
                   for p in ("sdpa", "flex", "eager") if (mode, shape, edit, p) in times]
        err = errors.get((mode, shape, edit, provider))
        keys = shape.split("Tk")[1].split()[0]
        table.append([f"attention {mode}", f"{keys} keys, edit {edit}",
                      fmt(ours, "ms") + (f" (max err {err:.1e})" if err is not None else ""), "; ".join(against)])
    e2e = {r["provider"]: r for r in rows if r["mode"] == "e2e" and r["metric"] == "generate"}
    prefill = {r["provider"]: r for r in rows if r["mode"] == "e2e" and r["metric"] == "prefill"}
    if "sdpa" in e2e:
        base, base_pre = float(e2e["sdpa"]["p50"]), float(prefill["sdpa"]["p50"])
        for provider in ("halluc-noedit", "halluc-pai", "halluc-var"):
            if provider in e2e:
                tps, pre = float(e2e[provider]["p50"]), float(prefill[provider]["p50"])
                table.append(["end to end", f"{provider}, {e2e[provider]['shape']}",
                              f"{fmt(tps, 'tokens/s')}, prefill {fmt(pre, 'ms')}",
                              f"SDPA {fmt(base, 'tokens/s')} ({base / tps:.2f}× the time), prefill "
                              f"{fmt(base_pre, 'ms')} ({pre / base_pre:.2f}×)"])
    return table


def method_rows(rows: list[dict], label: str) -> list[list[str]]:
    """One row per method (and mode) against vanilla in the same mode on the same model."""
    table = []
    vanilla = {(r["model"], r.get("mode", "")): r for r in rows if r["method"] == "none"}
    for r in rows:
        if r["method"] == "none":
            continue
        mode = r.get("mode", "")
        base = vanilla.get((r["model"], mode))
        peak = f", peak +{float(r['peak_mb']):.0f} MB" if r.get("peak_mb") else ""
        table.append([label, f"{r['method']}{' ' + mode if mode else ''}, {r['model']}",
                      f"{fmt(float(r['ms_per_token']), 'ms/token')}, prefill {fmt(float(r['prefill_ms']), 'ms')}{peak}",
                      (f"vanilla {fmt(float(base['ms_per_token']), 'ms/token')}: {float(r['ratio']):.2f}× per token, "
                       f"{float(r['prefill_ratio']):.2f}× prefill") if base else ""])
    return table


def summary(out: Path, env: dict, results: list[dict], dry: bool) -> str:
    """The Markdown the README takes: a heading line naming the device, then one table."""
    table = []
    for res in results:
        if res["step"].startswith("tests-"):
            counts, reasons = junit_counts(out / f"{res['step']}.xml")
            result = ", ".join(f"{n} {k}" for k, n in counts.items())
            table.append([res["step"], res["what"], f"{result} ({res['seconds']:.0f} s)", "; ".join(reasons)])
            if res["status"] != "passed":
                table[-1][2] += f"; **{res['status']}**, see {res['log']}"
        elif res["status"] != "passed":
            table.append([res["step"], res["what"], f"**{res['status']}** after {res['seconds']:.0f} s, see "
                          f"{res['log']}", "rows written before it stopped follow"])
    by_step = {res["step"] for res in results}
    if by_step & {"bench-attention", "bench-e2e"}:
        table += attention_rows(read_csv(out / "bench_attention.csv") + read_csv(out / "bench_e2e.csv"))
    if "bench-inmodel" in by_step:
        table += method_rows(read_csv(out / "bench_inmodel.csv"), "in-model method")
    if "bench-decoding" in by_step:
        table += method_rows(read_csv(out / "bench_decoding.csv"), "decoding method")
    kind = "DRY RUN on CPU at tiny sizes: checks the plumbing, measures nothing" if dry else \
        f"{env['device']}" + (f" (of {env['gpus']} GPUs)" if env.get("gpus", 1) > 1 else "")
    versions = ", ".join(f"{k} {env[k]}" for k in ("torch", "cuda", "triton", "transformers") if env.get(k))
    total = sum(r["seconds"] for r in results)
    lines = [f"**{kind}** ({versions}; commit {env['git_commit']}, {env['date']}; {total:.0f} s in all). "
             "Times are medians; a ratio is halluc's time over the baseline's.", "",
             "| check | case | halluc | against |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table]
    return "\n".join(lines) + "\n"


# ---- main -------------------------------------------------------------------------------------
def default_out() -> Path:
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"])
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return REPO / "runs" / f"gpu-check-{stamp}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="the same steps on CPU at tiny sizes (what CI runs)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: $OUT, else "
                                                          "runs/gpu-check-<UTC time>)")
    p.add_argument("--steps", default=None, help="comma list of steps to run (default: all)")
    p.add_argument("--workers", type=int, default=None,
                   help="pytest-xdist workers for the tests on a GPU (default: cores - 2, at most 12, when "
                        "pytest-xdist is installed; 1 = none)")
    args = p.parse_args(argv)
    names = [s.name for s in steps(False, 1)]
    args.steps = [s for s in (args.steps or ",".join(names)).split(",") if s]
    if bad := sorted(set(args.steps) - set(names)):
        p.error(f"unknown step {', '.join(bad)}; choose from {', '.join(names)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    env = preflight(args.dry_run)
    from speed.common import git_commit  # after the preflight: it imports torch and halluc
    out = (args.out or default_out()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    commit = git_commit()  # a lent machine gets the working tree without .git: HALLUC_GIT_COMMIT names it
    env |= {"git_commit": os.environ.get("HALLUC_GIT_COMMIT", commit) if commit == "unknown" else commit,
            "dry_run": args.dry_run,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    print(f"gpu-check: {'dry run on CPU' if args.dry_run else env['device']}; writing to {out}", flush=True)
    plan = [s for s in steps(args.dry_run, xdist_workers(args.workers, args.dry_run)) if s.name in args.steps]
    results = []
    for step in plan:
        (out / step.output).unlink(missing_ok=True)  # a rerun into the same folder starts the file afresh
        results.append(run_step(step, out, step.cap_s * (DRY_CAP_SCALE if args.dry_run else 1)))
    env["steps"] = results
    (out / "environment.json").write_text(json.dumps(env, indent=2) + "\n")
    text = summary(out, env, results, args.dry_run)
    (out / "summary.md").write_text(text)
    print("\n" + text, flush=True)
    failed = [r["step"] for r in results if r["status"] != "passed"]
    print(f"gpu-check: {'all steps passed' if not failed else 'FAILED: ' + ', '.join(failed)}; "
          f"table in {out / 'summary.md'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
