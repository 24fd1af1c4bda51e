"""`halluc world train|generate-data`: train toy-llava, or write a split of the toy world in COCO format."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from halluc.cli.common import OneLineUsageErrors, check_out_dir, friendly_errors, stderr
from halluc.errors import HallucError
from halluc.limits import MAX_BATCH, MAX_STEPS, MAX_WORLD_IMAGES, MAX_WORLD_SIDE, check_number, check_seed

world_app = typer.Typer(rich_markup_mode=None, help="The toy world: its data and the toy-llava model trained on it.",
                        no_args_is_help=True)


@world_app.command("train", cls=OneLineUsageErrors)
@friendly_errors
def train_command(
    out: Path = typer.Option(Path("toy_llava"), "--out", "-o", help="Directory for the save_pretrained weights."),
    seed: int = typer.Option(0, help="Seeds the weights and the data stream."),
    steps: int = typer.Option(None, help="Language-stage optimiser steps [default: the shipped model's]."),
    vision_steps: int = typer.Option(None, help="Vision-stage steps; 0 trains the ViT end to end instead "
                                     "[default: the shipped model's]."),
    image_size: int = typer.Option(None, help="World image side in px [default: the shipped model's, 64]."),
    batch_size: int = typer.Option(None, help="Scenes per step [default: the shipped model's]."),
    prior_negative_rate: float = typer.Option(None, help="Share of 'No' questions naming an absent in-prior "
                                              "object [default: the shipped model's]."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar with ETA on stderr."),
) -> None:
    """Train toy-llava from scratch on CPU (vision stage, then language stage), deterministically from --seed."""
    from halluc.world.model import ToyModelConfig
    from halluc.world.train import DEFAULT_STEPS, TrainRecipe, train

    for flag, value, low in (("--steps", steps, 1), ("--vision-steps", vision_steps, 0),
                             ("--batch-size", batch_size, 1), ("--image-size", image_size, 8)):
        if value is not None and value < low:
            raise HallucError(f"{flag} must be >= {low}; got {value}")
    for flag, value, high in (("--steps", steps, MAX_STEPS), ("--vision-steps", vision_steps, MAX_STEPS),
                              ("--batch-size", batch_size, MAX_BATCH), ("--image-size", image_size, MAX_WORLD_SIDE)):
        if value is not None:
            check_number(flag, value, integer=True, high=high)
    check_seed("--seed", seed)
    check_out_dir(out)
    given = (("batch_size", batch_size), ("prior_negative_rate", prior_negative_rate), ("vision_steps", vision_steps))
    overrides: dict[str, Any] = {k: v for k, v in given if v is not None}
    try:   # the configs validate themselves; a bad value is a one-line error, not a traceback
        config = ToyModelConfig()
        if image_size is not None:
            config = replace(config, world=replace(config.world, image_size=image_size))
        recipe = replace(TrainRecipe(), **overrides)
    except ValueError as err:
        raise HallucError(str(err)) from None
    result = train(config, out, seed=seed, steps=steps or DEFAULT_STEPS, recipe=recipe, progress=progress)
    stderr(f"{result.parameters:,} parameters, {result.steps} steps in {result.seconds / 60:.1f} min, "
           f"final loss {result.final_loss:.4f}")
    typer.echo(str(out))


@world_app.command("generate-data", cls=OneLineUsageErrors)
@friendly_errors
def generate_data_command(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for images/, instances.json and captions.json."),
    split: str = typer.Option("val", help="train, val or test."),
    n_images: int = typer.Option(300, "--n-images", "-n", help="Scenes to render."),
    seed: int = typer.Option(0, help="The world's root seed."),
    min_objects: int = typer.Option(None, help="Objects per image, at least [default: toy-llava's world]."),
) -> None:
    """Write a split of toy-llava's world (COCO format); POPE and CHAIR builders read it as they read COCO."""
    from halluc.world.coco import generate_world
    from halluc.world.model import TRAIN_WORLD

    if n_images < 1:
        raise HallucError(f"--n-images must be >= 1; got {n_images}")
    check_number("--n-images", n_images, integer=True, high=MAX_WORLD_IMAGES)
    check_seed("--seed", seed)
    check_out_dir(out)
    try:
        world = replace(TRAIN_WORLD, seed=seed)
        if min_objects is not None:
            world = replace(world, min_objects=min_objects, max_objects=max(min_objects, world.max_objects))
        files = generate_world(out, world, n_images=n_images, split=split)
    except ValueError as err:
        raise HallucError(str(err)) from None
    typer.echo(str(files.root))
