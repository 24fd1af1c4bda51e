"""Bounds on everything a request can ask for, and the number checks every entry point shares.

A request for more than a bound (beams, candidates, new tokens, bootstrap resamples, image pixels, seeds)
is one HallucError before any work starts, never an out-of-memory kill or hours of generation. The
Python API and the CLI reach these checks through the same constructors (`Decoding`, `RunOptions`,
`Method`), so a value is refused the same way wherever it comes from. NaN, infinities and values that
overflow a float (`1e999` reads as inf) are refused everywhere a number is taken.
"""
from __future__ import annotations

import math
from typing import Any

from halluc.errors import HallucError

MAX_NEW_TOKENS = 32_768          # and never beyond the model's context (checked once the model is loaded)
MAX_BEAMS = 64                   # num_beams, and OPERA's beams
MAX_CANDIDATES = 1_024           # OPERA's candidates per beam (a tiny vocabulary whole; beams x candidates rows)
MAX_BATCH = 1_024                # (image, prompt) pairs in one generate call; --batch-size
MAX_PROMPT_CHARS = 100_000       # one prompt's text, before it is tokenised
MAX_TOP_K = 1_000_000            # more than any vocabulary
MIN_TEMPERATURE = 0.01           # logits / 1e-300 overflow to inf and sampling draws from NaN
MAX_TEMPERATURE = 100.0
MAX_BOOTSTRAP = 10_000           # paired-bootstrap resamples in `halluc report` (each re-scores every method)
MAX_SEED = 2**63 - 1             # torch's generators take a signed 64-bit seed
MAX_PARAMETER = 1e6              # |a method parameter| without a bound of its own (strengths, layer indices)
MAX_IMAGE_PIXELS = 64_000_000    # width x height of one decoded image (8000 x 8000)
MAX_ASPECT_RATIO = 100           # long side / short side (Qwen's processors refuse above 200)
MIN_IMAGE_SIDE = 14              # px: below one vision patch, a native-resolution tower (Pixtral's) fails mid-forward
MAX_STEPS = 1_000_000            # training steps (`halluc world train`)
MAX_WORLD_IMAGES = 1_000_000     # scenes rendered by `halluc world generate-data`
MAX_WORLD_SIDE = 1_024           # the toy world's image side (`halluc world train --image-size`)


def check_number(name: str, value: Any, *, integer: bool = False, low: float | None = None,
                 high: float | None = None, open_low: bool = False) -> None:
    """`value` is a finite number (an integer when `integer`) within [low, high] ((low, high] when `open_low`).

    Booleans are not numbers here (`True` would read as 1), strings are not either; the message names
    `name` and the value as given."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HallucError(f"{name} must be {kind}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise HallucError(f"{name} must be a finite number, got {value!r}")
    if integer and not isinstance(value, int):
        raise HallucError(f"{name} must be an integer, got {value!r}")
    too_low = low is not None and (value <= low if open_low else value < low)
    if too_low or (high is not None and value > high):
        raise HallucError(f"{name} must be in {'(' if open_low else '['}{_show(low, '-inf')}, {_show(high, 'inf')}]"
                          f", got {value!r}")


def check_seed(name: str, value: Any) -> None:
    """A seed: an integer in [0, MAX_SEED]."""
    check_number(name, value, integer=True, low=0, high=MAX_SEED)


def _show(bound: float | None, infinite: str) -> str:
    if bound is None:
        return infinite
    return "2**63 - 1" if bound == MAX_SEED else str(bound)
