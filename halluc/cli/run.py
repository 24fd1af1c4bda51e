"""`halluc run`: a thin layer over `halluc.api.run`."""
from __future__ import annotations

from pathlib import Path

import typer

from halluc import api
from halluc.benchmarks.build import data_home
from halluc.benchmarks.report import render_terminal
from halluc.benchmarks.run import Shard
from halluc.cli.common import friendly_errors, parse_method_params, stderr
from halluc.errors import HallucError



def parse_shard(text: str | None) -> Shard | None:
    if text is None:
        return None
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise HallucError(f"--shard expects I/N with 0 <= I < N, got '{text}'")
    return Shard(int(index), int(count))


@friendly_errors
def run(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="Alias, tiny-* model, local directory or hub id."),
    method: list[str] = typer.Option(["none"], "--method", help="Method to compare (repeat); 'vhr+vcd' stacks."),
    benchmark: str = typer.Option("pope", "--benchmark", "-b", help="pope, chair or mme."),
    split: list[str] = typer.Option([], "--split", help="POPE split or MME subtask (repeat); default all."),
    protocol: str = typer.Option(None, help="pope: llava|vcd|opera; chair: opera512|short64; mme: llava|official."),
    images: Path = typer.Option(None, help="Image directory (COCO val2014; the MME release folder)."),
    data: Path = typer.Option(None, help=f"Benchmark files (default: {data_home()}/<benchmark>)."),
    limit: int = typer.Option(None, help="Only the first N samples of each split."),
    seed: int = typer.Option(0), batch_size: int = typer.Option(1, help="Greedy/beam samples per batch."),
    out: Path = typer.Option(None, help="Run directory (default runs/<model>_<benchmark>_<protocol>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed or extended run in --out."),
    max_new_tokens: int = typer.Option(None, help="Override the protocol's max_new_tokens."),
    cache: Path = typer.Option(None, help="Output cache directory shared between runs."),
    shard: str = typer.Option(None, help="I/N: run shard I of N (else RANK/WORLD_SIZE from torchrun/accelerate)."),
    param: list[str] = typer.Option([], "--param", help="Method parameter NAME=VALUE or METHOD.NAME=VALUE."),
    device: str = typer.Option("auto"), dtype: str = typer.Option("auto"),
) -> None:
    """Run MODEL with each METHOD (and vanilla) on a benchmark; print the leaderboard."""
    options = api.RunOptions(splits=tuple(split) or None, protocol=protocol, images=images, data=data, limit=limit,
                             seed=seed, batch_size=batch_size, out=out, resume=resume, max_new_tokens=max_new_tokens,
                             device=device, dtype=dtype, cache_dir=cache, shard=parse_shard(shard))
    run_dir, rows = api.run(model, method, benchmark, options, **parse_method_params(ctx.args, param))
    if rows:
        typer.echo(render_terminal(rows))
        stderr(f"results: {run_dir / 'results.json'}")
