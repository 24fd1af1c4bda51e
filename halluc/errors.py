"""User-facing errors: one clear line, no traceback (the CLI prints `str(err)` and exits 2)."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class HallucError(ValueError):
    """Bad input from the user: the message alone must tell them what to fix."""


class MethodRefused(HallucError):
    """A method cannot run here: the family, the model's geometry (a non-square image grid, no vision CLS
    token) or the other stacked methods do not give what it needs. One type for every refusal, raised before
    any hook is registered or any weights load where it can be known then."""


def unknown_choice(kind: str, value: str, choices: Iterable[str]) -> HallucError:
    """`unknown method 'vdc' (did you mean 'vcd'?); choices: none, vcd, ...`"""
    choices, value = sorted(choices), str(value)  # a value from a damaged file may be anything
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return HallucError(f"unknown {kind} '{value}'{hint}; choices: {', '.join(choices)}")
