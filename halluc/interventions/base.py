"""What a method is: a frozen dataclass of validated parameters plus typed declarations of what it needs.

A method never touches the model directly. It declares, each optional:

    hooks(session) -> list[HookSpec]               hooks `fn(activation, ctx)` on canonical adapter points
    attention_edits(session) -> {layer: AttentionEdit}   carried out by the "halluc" attention function
    branches(request) -> list[Branch]              extra views decoded as rows of the same batch, with
    combine(views) -> (N, V)                       their per-step combination (`combine(views, step)`
                                                   with `stepped = True`) and
    plausibility_cutoff() -> β | None              its cutoff on the original view
                                                   (`plausibility_cutoff_for(decoding)` per mode)
    logits_processors(session) -> list             per-step logit transforms
    search(session) -> Search | None               a search that replaces transformers' loop
                                                   (set `replaces_search = True` on the class)
    rewrite_prompt(text) -> text                   the user prompt as the method asks it (a control's
                                                   appended instruction), before any input is built

`halluc.interventions.attach` wires them up and removes exactly what it added. `branches` runs
before any input is built, so it gets the `Request` (model, PIL images, prompts, decoding); every
other declaration gets the complete `Session` (the batch, its view layout, image positions).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from halluc.errors import HallucError
from halluc.limits import MAX_PARAMETER
from halluc.modeling.placeholders import check_user_text

if TYPE_CHECKING:
    from halluc.engine.decoding import Decoding
    from halluc.engine.search import Search
    from halluc.engine.views import Branch
    from halluc.interventions.hooks import HookSpec
    from halluc.interventions.session import Request, Session
    from halluc.kernels.edits import AttentionEdit

MODES = ("greedy", "sample", "beam")
# generate() keyword arguments: a method parameter of the same name would be ambiguous in
# `halluc.generate(m, ..., method="x", seed=7)`, so the registry refuses it
DECODING_ARGUMENTS = frozenset({"seed", "temperature", "top_p", "top_k", "num_beams", "max_new_tokens", "do_sample",
                                "return_scores", "method", "decoding", "params"})


def param(default: Any, *, low: float | None = None, high: float | None = None,
          choices: tuple | None = None, doc: str = "", open_low: bool = False, loads: bool = False) -> Any:
    """A method parameter with its paper default and the range it is validated against. `loads`: it names a
    checkpoint the method loads from the machine's disk (set by whoever runs halluc, never by a served request)."""
    meta = {"low": low, "high": high, "choices": choices, "doc": doc, "open_low": open_low, "loads": loads}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults (methods are frozen)")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Method:
    """Base of every method. Subclasses are frozen dataclasses registered with `@register`.

    Class attributes describe the method for `halluc methods`, the README and the contract tests:
        name      registry key;  paper  citation;  formula  one line;
        kind      "in-model", "decoding" or "prompt";  families  supported model families (None = all);
        cost      the extra passes it makes, in words;
        modes     the decodings it defines (greedy, sample, beam); others are refused;
        needs     what it needs of a family's adapter beyond image positions ("grid", "vision_cls",
                  "pre_norm_block");
        example_params   parameters under which it acts on the tiny offline models (contract tests);
        zero_params      parameters under which it is the identity (bit-identical to vanilla).
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    kind: ClassVar[str] = "in-model"
    families: ClassVar[frozenset[str] | None] = None
    cost: ClassVar[str] = "none"
    modes: ClassVar[tuple[str, ...]] = MODES
    needs: ClassVar[frozenset[str]] = frozenset()
    example_params: ClassVar[Mapping[str, Any]] = {}
    zero_params: ClassVar[Mapping[str, Any] | None] = None
    # True when the method supplies its own search loop (`search()`); two such methods cannot stack
    replaces_search: ClassVar[bool] = False
    # True when its search takes a batch (used when it is the only method; else one sample per search)
    batched_search: ClassVar[bool] = False
    # True when the method keeps per-row state sized at prefill, so a search that re-batches rows
    # (OPERA's beams x candidates probes) cannot run with it
    fixed_rows: ClassVar[bool] = False
    # True when `combine` adds to the original view (its contribution is combine − original), so it
    # stacks with other branch methods by summing; False: it must be the only branch method
    additive: ClassVar[bool] = True
    # True when the method's combination is its plausibility cutoff alone (no branch views): it joins the
    # view combination without extra rows (the `apc` control)
    cutoff_alone: ClassVar[bool] = False
    # True when `combine(views, step)` also takes the decode step (0 at the first generated token): a weight
    # that changes over time (M3ID)
    stepped: ClassVar[bool] = False
    # True when the method reads a calibration set through `settings()` (`halluc calibrate`; VTI)
    calibrated: ClassVar[bool] = False
    # "method" (a published mitigation) or "control" (a spurious baseline that only moves the yes/no balance
    # or the sampling, cd_rethink's: listed apart, never in `--method all`, run with `--controls`)
    category: ClassVar[str] = "method"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _validate(self.name, f, getattr(self, f.name))

    # ---- declarations (all default to "needs nothing") ------------------------------------
    def new_state(self) -> Any:
        """The per-call state its hooks share (`ctx.state`), made fresh by attach for every generate call;
        None: no state."""
        return None

    def hooks(self, session: Session) -> list[HookSpec]:
        return []

    def attention_edits(self, session: Session) -> dict[int, AttentionEdit]:
        """{decoder layer index: AttentionEdit} for the registered attention function."""
        return {}

    def branches(self, request: Request) -> list[Branch]:
        """Extra input views decoded as rows of the same batch (see `halluc.engine.views`)."""
        return []

    def combine(self, views: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Per-step combination of per-view log-probs {ORIGINAL or branch name: (N, V)} -> (N, V)."""
        raise NotImplementedError(f"{self.name} declares branches but no combine()")

    def plausibility_cutoff(self) -> float | None:
        """Adaptive plausibility cutoff β on the original view for `combine` (None = no cutoff)."""
        return None

    def plausibility_cutoff_for(self, decoding: Decoding) -> float | None:
        """The cutoff under this call's decoding (greedy, sample, beam); by default
        `plausibility_cutoff()` in every mode (SID's official greedy rule has none, its sampling one has)."""
        return self.plausibility_cutoff()

    def logits_processors(self, session: Session) -> list[Any]:
        return []

    def search(self, session: Session) -> Search | None:
        """The search loop that replaces transformers' (with `replaces_search = True`)."""
        return None

    def rewrite_prompt(self, text: str) -> str:
        """The user prompt as this method asks it (default: unchanged)."""
        return text

    def is_identity(self) -> bool:
        """True when the parameters make the method a no-op (used to skip work, never required)."""
        return False

    @classmethod
    def parameters(cls) -> list[dict]:
        """Name, default, range and doc of each parameter, for `halluc methods` and the docs."""
        return [{"name": f.name, "default": f.default, **f.metadata} for f in dataclasses.fields(cls)]

    def supports(self, family: str) -> bool:
        return self.families is None or family in self.families

    def requires(self) -> frozenset[str]:
        """What these parameters need of the family's adapter beyond image positions (default: `needs`)."""
        return self.needs

    def claims(self) -> frozenset[str]:
        """Model inputs this method rewrites for itself (e.g. "position_ids"); two methods that claim the
        same one cannot be stacked."""
        return frozenset()


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
    if isinstance(f.default, str) and isinstance(value, str):
        check_user_text(value, where)  # a text a method puts into the prompt (ICD's disturbance)
        return
    if isinstance(f.default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HallucError(f"{where} must be a number; got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes every comparison; 1e999 is inf
            raise HallucError(f"{where} must be a finite number; got {value!r}")
        if isinstance(f.default, int) and not isinstance(f.default, bool) and int(value) != value:
            raise HallucError(f"{where} must be an integer; got {value!r}")
        low, high = meta.get("low"), meta.get("high")
        if high is None and abs(value) > MAX_PARAMETER:  # a strength of 1e300 turns logits into inf - inf = NaN
            raise HallucError(f"{where} must be within ±{MAX_PARAMETER:g}; got {value!r}")
        too_low = low is not None and (value <= low if meta.get("open_low") else value < low)
        if too_low or (high is not None and value > high):
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            bracket = "(" if meta.get("open_low") else "["
            raise HallucError(f"{where} must be in {bracket}{lo}, {hi}]; got {value!r}")
