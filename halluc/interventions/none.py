"""Vanilla decoding: the baseline every method is compared against."""
from __future__ import annotations

from dataclasses import dataclass

from halluc.interventions.base import Method
from halluc.interventions.registry import register


@register
@dataclass(frozen=True)
class NoMethod(Method):
    """No intervention: the model exactly as loaded."""

    name = "none"
    paper = "-"
    formula = "logits unchanged"

    def is_identity(self) -> bool:
        return True
