"""Calibration sets by name (light: no torch), for methods that read one (VTI's steering vectors).

A plugin registers a provider `() -> list[CalibrationRecord]` under a name; the first registered is the
default (the toy world registers "world"). Nothing here imports a provider.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from halluc.registry import Registry


@dataclass(frozen=True)
class CalibrationRecord:
    """One calibration example: an image, the question asked, a correct caption and the same caption with
    objects swapped for absent, frequently co-occurring ones (VTI's demo file: `value`, `h_value`)."""

    image: Any  # PIL image
    question: str
    good: str
    hallucinated: str


CALIBRATION_SETS: Registry[Callable[[], list[CalibrationRecord]]] = Registry("calibration set")
