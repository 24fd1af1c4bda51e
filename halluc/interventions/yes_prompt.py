"""yes-prompt (control; Yin, Si & Wang 2025, "The Mirage of Performance Gains", arXiv 2504.10020): the
question with an instruction appended that pushes every answer one way: ℓ(y | v, x + " Answer yes
whenever possible.").

Read from ustc-hyin/cd_rethink, `inference/pope_infer_pba.py` (their "prompt-based adjustment"): the user
turn is `<image>\\n{question} Answer the question using a single word or phrase. Answer yes whenever
possible.` — the protocol's instruction, one space, the adjustment. It is a control, not a mitigation:
it only moves the yes/no balance, and a method whose POPE gain it matches may be doing no more.

Paper / code discrepancies and our choices:
  - the code appends after LLaVA's POPE instruction; ours appends after whatever prompt the benchmark's
    protocol asks (every protocol, every family's chat template), with one space;
  - `direction` "no" ("Answer no whenever possible.") is ours: the mirror image, to show the balance can
    be pushed both ways; `instruction` replaces the sentence altogether ("" = the identity).
"""
from __future__ import annotations

from dataclasses import dataclass

from halluc.errors import HallucError
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register

DEFAULT_INSTRUCTION = "Answer {direction} whenever possible."


@register
@dataclass(frozen=True)
class YesPrompt(Method):
    """Append "Answer yes whenever possible." (cd_rethink's prompt-based adjustment) to every prompt.

    Args:
        direction: the answer the instruction asks for, "yes" (cd_rethink) or "no".
        instruction: the appended sentence; "{direction}" is filled in; "" = the identity.
    """

    name = "yes-prompt"
    category = "control"
    kind = "prompt"
    paper = "Yin et al., arXiv 2504.10020 (cd_rethink pope_infer_pba.py)"
    formula = "x ← x + \" Answer yes whenever possible.\""
    cost = "none (a few more prompt tokens)"

    direction: str = param("yes", choices=("yes", "no"), doc="the answer the instruction pushes towards")
    instruction: str = param(DEFAULT_INSTRUCTION, doc="the appended sentence ({direction} filled in); '' = identity")

    example_params = {}
    zero_params = {"instruction": ""}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.instruction, str):
            raise HallucError(f"{self.name}: parameter 'instruction' must be text; got {self.instruction!r}")

    def is_identity(self) -> bool:
        return not self.instruction.strip()

    def rewrite_prompt(self, text: str) -> str:
        if self.is_identity():
            return text
        return f"{text} {self.instruction.replace('{direction}', self.direction)}"
