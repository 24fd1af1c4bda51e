"""What a method is: a frozen dataclass of validated parameters plus declarations of what it needs.

A method never touches the model directly. It declares
    hooks(session)            forward / forward-pre hooks on canonical adapter points,
    attention_edits(session)  per-layer edits carried out by the registered "halluc" attention function,
    branches(session)         extra input branches decoded as rows of the same batch (decoding methods),
    logits_processors(session) per-step logit transforms,
    search                    a search strategy that replaces HF's (e.g. OPERA's beam search),
and `halluc.interventions.attach` wires them up and removes exactly what it added.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from halluc.errors import HallucError

if TYPE_CHECKING:
    from halluc.interventions.session import Session


def param(default: Any, *, low: float | None = None, high: float | None = None,
          choices: tuple | None = None, doc: str = "", open_low: bool = False) -> Any:
    """A method parameter with its paper default and the range it is validated against."""
    meta = {"low": low, "high": high, "choices": choices, "doc": doc, "open_low": open_low}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults (methods are frozen)")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class HookSpec:
    """One hook on a canonical adapter point (see `halluc.models.base`)."""

    point: str
    fn: Callable
    kind: str = "forward"  # "forward" | "forward_pre"
    with_kwargs: bool = False

    def __post_init__(self):
        if self.kind not in ("forward", "forward_pre"):
            raise ValueError(f"HookSpec.kind must be 'forward' or 'forward_pre', got {self.kind!r}")


@dataclass(frozen=True)
class Method:
    """Base of every method. Subclasses are frozen dataclasses registered with `@register`.

    Class attributes describe the method for `halluc methods` and the README:
        name      registry key;  paper  citation;  formula  one line;
        kind      "in-model" or "decoding";  families  supported model families (None = all);
        cost      the extra passes it makes, in words.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    kind: ClassVar[str] = "in-model"
    families: ClassVar[frozenset[str] | None] = None
    cost: ClassVar[str] = "none"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _validate(self.name, f, getattr(self, f.name))

    # ---- declarations (all default to "needs nothing") ------------------------------------
    def hooks(self, session: Session) -> list[HookSpec]:
        return []

    def attention_edits(self, session: Session) -> dict[int, Any]:
        """{decoder layer index: AttentionEdit} for the registered attention function."""
        return {}

    def branches(self, session: Session) -> list[Any]:
        """Extra input views (`halluc.decoding.branches.Branch`) decoded as rows of the same batch."""
        return []

    def combine(self, views: Mapping[str, Any]) -> Any:
        """Per-step combination of per-view log-probs {view: (N, V)} -> (N, V); needed with branches."""
        raise NotImplementedError(f"{self.name} declares branches but no combine()")

    def plausibility(self) -> float | None:
        """Adaptive plausibility cutoff beta on the original view (None = no cutoff)."""
        return getattr(self, "beta", None)

    def logits_processors(self, session: Session) -> list[Any]:
        return []

    search: ClassVar[str | None] = None
    # True when the method keeps per-row state sized at prefill, so a search that re-batches rows
    # (OPERA's beams x candidates probes) cannot run with it
    fixed_rows: ClassVar[bool] = False

    def is_identity(self) -> bool:
        """True when the parameters make the method a no-op (used to skip work, never required)."""
        return False

    @classmethod
    def parameters(cls) -> list[dict]:
        """Name, default, range and doc of each parameter, for `halluc methods` and the docs."""
        return [{"name": f.name, "default": f.default, **f.metadata} for f in dataclasses.fields(cls)]

    def supports(self, family: str) -> bool:
        return self.families is None or family in self.families


def _validate(method: str, f: dataclasses.Field, value: Any) -> None:
    meta = f.metadata
    where = f"{method}: parameter '{f.name}'"
    if meta.get("choices") is not None:
        if value not in meta["choices"]:
            raise HallucError(f"{where} must be one of {', '.join(map(str, meta['choices']))}; got {value!r}")
        return
    if isinstance(f.default, bool):
        if not isinstance(value, bool):
            raise HallucError(f"{where} must be true or false; got {value!r}")
        return
    if isinstance(f.default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HallucError(f"{where} must be a number; got {value!r}")
        if isinstance(f.default, int) and not isinstance(f.default, bool) and int(value) != value:
            raise HallucError(f"{where} must be an integer; got {value!r}")
        low, high = meta.get("low"), meta.get("high")
        too_low = low is not None and (value <= low if meta.get("open_low") else value < low)
        if too_low or (high is not None and value > high):
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            bracket = "(" if meta.get("open_low") else "["
            raise HallucError(f"{where} must be in {bracket}{lo}, {hi}]; got {value!r}")
