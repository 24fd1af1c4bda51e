"""`halluc run`: a thin layer over `halluc.api.run`."""
from __future__ import annotations

from pathlib import Path

import typer

from halluc import api
from halluc.cli.common import friendly_errors, parse_method_params, stderr

# `halluc run` with no arguments: the product's main job on the shipped toy world, offline, in minutes.
TOY_MODEL = "toy-llava"
# one-pass and contrastive methods of both generations; left out for time: AGLA (a matcher pass per
# sample), OPERA (its own beam search, ~60x vanilla), CCA (an ablation without its retrained weights) and
# MemVR (it never fires on one-word answers): `--method all` runs them too
TOY_METHODS = ("vcd", "ritual", "damro", "vhr", "vista", "pai", "var", "only", "vaf", "deco", "sid", "icd", "dola",
               "m3id", "avisc", "vti")
# the main job's batch size: greedy batches equal single samples (tested), and a 1 M-parameter model
# on CPU is dominated by per-call overhead at batch 1 (speed/bench_main_job.py measures the gain)
MAIN_JOB_BATCH = 64


@friendly_errors
def run(
    ctx: typer.Context,
    model: str = typer.Option(None, "--model", "-m",
                              help=f"Alias, tiny-* model, local dir or hub id [default: {TOY_MODEL} "
                              "on the toy world]."),
    method: list[str] = typer.Option([], "--method", help="Method to compare (repeat); 'vhr+vcd' stacks; 'all' runs "
                                     "every registered method; vanilla is always included."),
    benchmark: list[str] = typer.Option([], "--benchmark", "-b", help="pope, chair, mme, amber or hallusionbench "
                                        "(repeat) [default: pope]."),
    dataset: str = typer.Option(None, help="coco (your files) or world (the toy world) [default: coco, or world "
                                "with the toy model]."),
    split: list[str] = typer.Option([], "--split", help="POPE split or MME subtask (repeat); default all."),
    protocol: str = typer.Option(None, help="pope: llava|vcd|opera; chair: opera512|short64; mme: llava|official; "
                                 "amber: llava|official; hallusionbench: vlmevalkit."),
    images: Path = typer.Option(None, help="Image directory (COCO val2014; the MME release folder)."),
    data: Path = typer.Option(None, help=f"Benchmark files (default: {api.data_home()}/<benchmark>); with --source hf "
                              "a dataset saved with save_to_disk, or ID@REVISION."),
    source: str = typer.Option("auto", help="local (files), hf (the benchmark's HF dataset, pinned revision), or "
                               "auto: hf for pope, mme, hallusionbench when no --images is given."),
    limit: int = typer.Option(None, help="Only the first N samples of each split."),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(None, help=f"Greedy/beam samples per batch [default: {MAIN_JOB_BATCH} for the "
                                   "toy main job, else 1]."),
    out: Path = typer.Option(None, help="Run directory (default runs/<model>_<benchmark>_<protocol>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed or extended run in --out."),
    max_new_tokens: int = typer.Option(None, help="Override the protocol's max_new_tokens."),
    cache: Path = typer.Option(None, help="Output cache directory shared between runs."),
    shard: str = typer.Option(None, help="I/N: run shard I of N (else RANK/WORLD_SIZE from torchrun/accelerate)."),
    shard_timeout: float = typer.Option(1800.0, help="Seconds shard 0 waits for a new sample from the other shards "
                                        "before it stops and names the missing ones."),
    param: list[str] = typer.Option([], "--param", help="Method parameter NAME=VALUE or METHOD.NAME=VALUE."),
    controls: bool = typer.Option(False, "--controls", help="Add the control methods (yes-prompt, yes-bias, "
                                  "logit-shift; apc under sampling) that tell a balance shift from a real gain."),
    seeds: int = typer.Option(1, "--seeds", help="Repeat sampling protocols with N seeds (seed, seed+1, ...), each "
                              "in OUT/seed-S; the report gives mean ± sd."),
    bootstrap: int = typer.Option(1000, min=0, help="Paired bootstrap resamples for the leaderboard's 95% intervals "
                                  "(0 = none), as in `halluc report`."),
    device: str = typer.Option("auto"), dtype: str = typer.Option("auto"),
) -> None:
    """Run MODEL with each METHOD (and vanilla) on benchmarks; print the leaderboard.

    With no arguments: toy-llava on the toy world's POPE and CHAIR with vanilla and a representative set of methods.
    """
    toy = model is None
    model = model or TOY_MODEL
    dataset = dataset or ("world" if toy else "coco")
    benchmarks = benchmark or (["pope", "chair"] if dataset == "world" else ["pope"])
    methods = method or (list(TOY_METHODS) if toy else ["none"])
    params = parse_method_params(ctx.args, param)
    batch_size = batch_size if batch_size is not None else (MAIN_JOB_BATCH if toy else 1)
    options = api.RunOptions(splits=tuple(split) or None, protocol=protocol, dataset=dataset, source=source,
                             images=images,
                             data=data, limit=limit, seed=seed, batch_size=batch_size, out=out, resume=resume,
                             max_new_tokens=max_new_tokens, device=device, dtype=dtype, cache_dir=cache,
                             shard=api.parse_shard(shard), shard_timeout=shard_timeout)
    def say_plan(plans, total: int, done: int) -> None:
        _say_plan(plans, total, done, seeds=seeds)

    results = api.run_benchmarks(model, methods, benchmarks, options, controls=controls, seeds=seeds,
                                 on_plan=say_plan, **params)
    for run_dir, _ in results:
        stderr(f"results: {run_dir / 'results.json'}")
    scored = [run_dir for run_dir, bench_rows in results if bench_rows]  # shards other than 0 score nothing
    if scored:  # what `halluc report` prints for these directories (with --seeds N: mean ± sd over seeds)
        typer.echo(api.render_terminal(api.report(scored, 0 if seeds > 1 else bootstrap)))


def _say_plan(plans, total: int, done: int, seeds: int = 1) -> None:
    """The work up front: configurations x benchmarks x samples, and what is already done."""
    entries = plans[0].spec.entries
    parts = [f"{p.benchmark} ({sum(len(s) for s in p.samples.values())} samples in {len(p.samples)} "
             f"split{'s' if len(p.samples) > 1 else ''})" for p in plans]
    left = f"; {done} already done, {total - done} to generate" if done else ""
    once = sorted({p.benchmark for p in plans if not p.spec.task.protocol.decoding.get("do_sample")})
    if seeds > 1 and once:  # --seeds N: greedy and beam protocols run once
        stderr(f"--seeds repeats sampling protocols only: {', '.join(once)} (not sampled) run once")
    stderr(f"{plans[0].spec.model}: {len(entries)} configurations ({', '.join(e.label for e in entries)}) x "
           f"{' + '.join(parts)} = {total} generations{left}")
