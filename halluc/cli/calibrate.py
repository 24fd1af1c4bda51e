"""`halluc calibrate vti`: compute a method's calibration once and cache it (VTI's steering vectors)."""
from __future__ import annotations

from pathlib import Path

import typer

from halluc import api
from halluc.cli.common import OneLineUsageErrors, friendly_errors, stderr

calibrate_app = typer.Typer(rich_markup_mode=None, no_args_is_help=True,
                            help="Compute a method's calibration ahead of a run and cache it.")


@calibrate_app.command("vti", cls=OneLineUsageErrors)
@friendly_errors
def vti_command(
    model: str = typer.Option(..., "--model", "-m", help="Alias, tiny-* model, local directory or hub id."),
    data: Path = typer.Option(None, help="JSONL records {image, question, value, h_value}; default: the "
                                         "default calibration set (the toy world's)."),
    images: Path = typer.Option(None, help="Folder the records' image paths are relative to (default: the "
                                           "data file's folder)."),
    calibration: str = typer.Option("", "--set", help="A registered calibration set instead of --data."),
    num_demos: int = typer.Option(70, help="Records drawn from the set."),
    calibration_seed: int = typer.Option(42, "--seed", help="Seed of the draw and of the patch masks."),
    num_trials: int = typer.Option(50, help="Masked copies of each image."),
    mask_ratio: float = typer.Option(0.99, help="Share of the patches masked."),
    device: str = typer.Option("auto"), dtype: str = typer.Option("auto"),
) -> None:
    """Compute VTI's steering vectors for MODEL (cached; printed: the id to run with)."""
    result = api.calibrate(model, "vti", data=data, images=images, calibration=calibration, num_demos=num_demos,
                           calibration_seed=calibration_seed, num_trials=num_trials, mask_ratio=mask_ratio,
                           device=device, dtype=dtype)  # every check before the weights load
    typer.echo(result["path"])
    if result["calibration"]:
        stderr(f"run with: --method vti --param calibration={result['calibration']}")
