"""Commands. Each one parses, calls `halluc.api`, and prints; nothing else lives here."""
from __future__ import annotations

from pathlib import Path

import typer

from halluc import api
from halluc.cli.calibrate import calibrate_app
from halluc.cli.common import OneLineUsageErrors, friendly_errors, parse_method_params, stderr
from halluc.cli.data import data_app
from halluc.cli.plugins import COMMAND_GROUPS
from halluc.cli.report import report
from halluc.cli.run import run
from halluc.cli.score import score_app
from halluc.cli.serve import serve

app = typer.Typer(rich_markup_mode=None, help="Training-free hallucination mitigation for vision-language models.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
RUN_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
app.command("run", context_settings=RUN_CONTEXT, cls=OneLineUsageErrors)(run)
app.command("report", cls=OneLineUsageErrors)(report)
app.command("serve", context_settings=RUN_CONTEXT, cls=OneLineUsageErrors)(serve)
app.add_typer(score_app, name="score")
app.add_typer(data_app, name="data")
app.add_typer(calibrate_app, name="calibrate")
api.load_plugins()
for _name, _group in COMMAND_GROUPS.items():
    app.add_typer(_group, name=_name)


@app.command(cls=OneLineUsageErrors)
def models() -> None:
    """List model aliases (first column) with their hub ids and families."""
    for row in api.models():
        typer.echo(f"{row['alias']:<21} {row['family']:<16} {row['hub_id']:<46} {row['note']}")


@app.command(cls=OneLineUsageErrors)
def methods(verbose: bool = typer.Option(False, "--verbose", "-v",
                                         help="Show parameters, defaults and where each method runs.")) -> None:
    """List methods, one per line (name first)."""
    support: dict[str, list[dict]] = {}
    if verbose:
        for row in api.support_matrix():
            support.setdefault(row["method"], []).append(row)
    rows = api.methods()  # the controls (cd_rethink's spurious baselines, `halluc run --controls`) listed last
    for row in [r for r in rows if r["category"] != "control"] + [r for r in rows if r["category"] == "control"]:
        kind = "control" if row["category"] == "control" else row["kind"]
        typer.echo(f"{row['name']:<10} {kind:<9} {row['paper']}")
        if verbose:
            typer.echo(f"{'':<10} formula: {row['formula']}; cost: {row['cost']}; families: {row['families']}")
            for p in row["parameters"]:
                bounded = p.get("low") is not None or p.get("high") is not None
                rng = f" range [{_bound(p['low'], '-inf')}, {_bound(p['high'], 'inf')}]" if bounded else ""
                typer.echo(f"{'':<12} --{p['name']} (default {p['default']}){rng} {p.get('doc', '')}")
            rows = support.get(row["name"], [])  # none ("none": vanilla decoding) runs everywhere, unlisted
            if rows:
                typer.echo(f"{'':<10} runs on: {', '.join(r['family'] for r in rows if r['reason'] is None)}")
            for r in rows:
                if r["reason"] is not None:
                    typer.echo(f"{'':<10} refused on {r['family']}: {r['reason']}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, cls=OneLineUsageErrors)
@friendly_errors
def generate(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="Alias, tiny-* model, local directory or hub id."),
    image: list[Path] = typer.Option(..., "--image", "-i", help="Image file (repeat for a batch)."),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="Prompt (repeat, or one for all images)."),
    method: list[str] = typer.Option(["none"], "--method", help="Method name; repeat to stack methods."),
    param: list[str] = typer.Option([], "--param", help="Method parameter NAME=VALUE (or pass --NAME VALUE)."),
    max_new_tokens: int = typer.Option(64, help="Maximum tokens to generate."),
    do_sample: bool = typer.Option(False, "--do-sample", help="Sample instead of greedy decoding."),
    temperature: float = typer.Option(1.0), top_p: float = typer.Option(1.0), top_k: int = typer.Option(0),
    num_beams: int = typer.Option(1, help="Beam search when > 1."),
    seed: int = typer.Option(0, help="Seed for sampling and for tiny models' weights."),
    device: str = typer.Option("auto"), dtype: str = typer.Option("auto"),
) -> None:
    """Generate an answer for each image; the texts alone go to stdout, one per line."""
    params = parse_method_params(ctx.args, param)
    decoding = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p,
                    top_k=top_k, num_beams=num_beams, seed=seed)
    api.check_request(model, list(image), list(prompt), method, decoding=api.Decoding(**decoding), device=device,
                      dtype=dtype, **params)  # every check before any weights load
    stderr(f"loading {model} ...")
    lvlm = api.load(model, device=device, dtype=dtype, seed=seed)
    texts = api.generate(lvlm, list(image), list(prompt), method, **decoding, **params)
    for text in texts:
        typer.echo(text.replace("\n", " "))


def _bound(value, infinite: str) -> str:
    return infinite if value is None else str(value)
