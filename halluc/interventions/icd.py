"""ICD (Wang et al., Findings of ACL 2024, arXiv 2403.18715): instruction contrastive decoding.

    ℓ = (1+α)·ℓ(y | v, x) − α·ℓ(y | v, x with a disturbance instruction),  cutoff β on ℓ(y | v, x)

The disturbed view is the same image and question with a "disturbance" instruction, by default as
the system text (`Branch("disturbed", system=...)`): on LLaVA-1.5 "{disturbance} USER: <image>\\n{q}
ASSISTANT:", the official `llava_custom` conversation whose system prompt *is* the disturbance. It is
decoded as extra rows of the same batch, with its own KV cache and token history, and every view
receives the one token chosen from the combination.
Hook points: none (a prompt-changing branch). Cost: 1 extra batch row per sample (the disturbed
prompt, its own KV cache): about 2x decode compute and KV memory.
Families: every family; the adapter places the system text (LLaVA, LLaVA-NeXT, Qwen2-VL: the
template's system turn; InstructBLIP: a line before the instruction).

Paper / code discrepancies and our choices (spec Part B §3):
  - the paper and the official loop sample (T = 1, top-p 1, seed 42); a method cannot choose the
    decoding, so sampling is the run's setting (`halluc run --protocol vcd` samples POPE answers as
    the paper does). Ours also defines greedy and beam search with the same contrast and cutoff.
  - α = 1, β = 0.1: what the launch scripts pass (the loop's own fallbacks are 0.5 / 0.1).
  - disturbance: the scripts loop over five prompts and which one produced each published table was
    not retrieved; the default is the paper's Figure 1 example, "You are a confused object detector."
  - the official normal view of LLaVA keeps the vicuna system prompt, which the disturbance replaces;
    ours keeps the family's own template (llava-hf has no system prompt), so the two views differ by
    the disturbance alone.
  - InstructBLIP: the official code gives the disturbance to the Q-Former's text input only; ours
    gives the system text to the Q-Former and the LM alike (the adapter's rule for system text).
  - `placement="instruction"` is the SID repository's ICD baseline, which many comparisons run: the
    disturbance after the image, before the question, system prompt kept (that repository also uses
    α = 0.5 and greedy decoding without a cutoff: `alpha=0.5, beta=0`).
  - the combination is on log-probabilities (identical after softmax, and so is the cutoff); the
    shipped code imports a misspelled sampler and patches `GenerationMixin.sample`, which the pinned
    transformers 4.42 never calls, so as released the contrast is not applied; ours is.
"""
from __future__ import annotations

from dataclasses import dataclass

from halluc.engine.combine import contrast
from halluc.engine.views import ORIGINAL, Branch
from halluc.errors import HallucError
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register

VIEW = "disturbed"
# the five disturbances of the official scripts; the paper's Figure 1 example is the default
SCRIPT_DISTURBANCES = (
    "You are an object detector to recognize every different objects.",
    "You are an object detector to recognize every different objects by focusing the shapes, colors and "
    "relationships of objects.",
    "I want you avoid any specific identification or categorization of the objects depicted.",
    "You are a confused objects detector to provide a fuzzy overview or impression of the image.",
    "You are an object detector to provide a general overview or impression of the image.",
)
DISTURBANCE = "You are a confused object detector."


@register
@dataclass(frozen=True)
class ICD(Method):
    """Instruction contrastive decoding.

    Args:
        alpha: contrast strength (scripts: 1; 0 with beta 0 = identity).
        beta: plausibility cutoff on the original view (0.1; 0 = none).
        disturbance: the disturbance instruction (paper Fig. 1: "You are a confused object detector.").
        placement: "system" (official: the disturbance is the system prompt) or "instruction" (the SID
            repository's variant: before the question).
    """

    name = "icd"
    kind = "decoding"
    paper = "Wang et al., Findings of ACL 2024 (arXiv 2403.18715)"
    formula = "(1+α)·ℓ(v, x) − α·ℓ(v, x with a disturbance instruction), cutoff β"
    cost = "1 extra batch row per sample (the disturbed prompt, its own KV cache): ~2x decode compute"

    alpha: float = param(1.0, low=0.0, doc="contrast strength (launch scripts: 1)")
    beta: float = param(0.1, low=0.0, high=1.0, doc="plausibility cutoff on the original view; 0 = none")
    disturbance: str = param(DISTURBANCE, doc="the disturbance instruction (paper Fig. 1's example)")
    placement: str = param("system", choices=("system", "instruction"),
                           doc="system: as the system prompt (official); instruction: before the question")

    zero_params = {"alpha": 0.0, "beta": 0.0}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.disturbance, str) or not self.disturbance.strip():
            raise HallucError(f"icd: parameter 'disturbance' must be a non-empty text; got {self.disturbance!r}")

    def is_identity(self) -> bool:
        return self.alpha == 0 and self.beta == 0

    def branches(self, request) -> list[Branch]:
        if self.is_identity():
            return []
        if self.placement == "system":
            return [Branch(VIEW, system=self.disturbance)]
        return [Branch(VIEW, prompt=lambda text, sample: f"{self.disturbance} {text}")]

    def combine(self, views):  # per-view log-probs (N, V) -> (N, V)
        return contrast(views[ORIGINAL], views[VIEW], self.alpha)

    def plausibility_cutoff(self) -> float:
        return self.beta
