"""TAME (Tang et al., "Intervening Anchor Token: Decoding Strategy in Alleviating Hallucinations for
MLLMs", ICLR 2025): the Dynamic Token Propagation Mechanism, as released.

    s = (e·q)(e·k)ᵀ / (√d·σ) = (e²/σ)·q·kᵀ/√d    in every decoder layer, every head;  e = 1.3, σ = 1.0

A constant sharpening of every attention logit of the language model (×1.69 by default), prefill and
decode. It is an `AttentionEdit(scale=e²/σ)` on every chosen layer: the halluc attention function runs
it as SDPA with its `scaling` multiplied, so no eager attention and no extra work. An edit that only
scales shares its layer with any other method's edit (the factors multiply; `attach`), so TAME stacks
with everything: in the authors' logs it runs under SID, VCD, ICD and OPERA decoding, whose extra rows
get the scale too, as here (the rows of a branch view run through the same layers).

Evidence (spec §7.2, re-read from the repo's METHOD_EXPERIMENTS/LLAVA-1.5 logs): the authors' own POPE runs
(LLaVA-1.5-7B, COCO, contrastive SID-greedy decoding, 3000 questions) show the shipped default LOWERING
accuracy: random 89.27 (e/σ = 1.0/1.0) → 87.50 (1.3/1.0), popular 87.03 → 84.83. 1.2/1.1 (×1.31) is the
mildest logged setting with small gains (popular 87.27, adversarial 80.83 against 80.47) but still loses on
random (88.23); under OPERA, 1.2/1.1 lowers random from 89.33 to 85.50. We ship the code's default (1.3, 1.0),
the method as released; `expansion=1.2, suppression=1.1` is the authors' best-logged setting.

Modes: greedy, sampling and beam search (the logs ran sample-greedy contrastive decoding and OPERA's beams).

Paper / code discrepancies and our choices (official repo Openlyn/ANTRP @ a9208466, its bundled
transformers 4.29.2, models/llama/modeling_llama.py, `LlamaAttention.forward`):
  - the paper "dynamically intervenes the eigenspectrum variance" of W_Q W_Kᵀ; the released code computes
    nothing dynamic: `expansion = 1.3`, `suppression = 1.0` are constants in the forward. A per-head
    trace / Frobenius rescaling is commented out (and reads an undefined `self.desired_trace`). We follow
    the code: a constant scale; the dynamic rule is not implemented.
  - the code multiplies q and k by e before RoPE and divides the scores by √d·σ (eager, scores in the model
    dtype, fp32 softmax); RoPE is a rotation, so this is the score factor e²/σ, which we apply to SDPA's
    `scaling` (the keys in our cache are unscaled; every query's scores are the same). On families with a
    norm after the projections (Gemma 3, Qwen3-VL's q_norm / k_norm) scaling q and k would be undone by
    the norm; the score factor keeps the method's effect there.
  - the code builds RoPE with a fixed `seq_len=1000` (positions ≥ 1000 fail) and views the keys with the
    query head count (no grouped-query attention); neither is reproduced: every family, any length.
  - layers: every layer of the language model (the code patches the LLM only, not the vision tower);
    `layers` may choose some (ours; () = all, the code).
  - auxiliary passes of other methods (VHR, VISTA) see the unedited model, as for every edit in halluc.

Families: every family (the edit needs nothing but the text decoder's attention).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from halluc.engine.steps import check_layers, layer_indices
from halluc.errors import HallucError
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register
from halluc.kernels.edits import AttentionEdit


def score_factor(expansion: float, suppression: float) -> float:
    """e²/σ: what scaling q and k by e and the scores by 1/σ does to every attention logit."""
    return expansion * expansion / suppression


@register
@dataclass(frozen=True)
class TAME(Method):
    """Dynamic Token Propagation Mechanism (as released: a constant query/key scale).

    Args:
        expansion: factor e on the queries and keys (code: 1.3; 1 = off).
        suppression: divisor σ of the scores (code: 1.0).
        layers: decoder layers to scale; () = every layer (the code).
    """

    name = "tame"
    kind = "in-model"
    paper = "Tang et al., ICLR 2025 (Intervening Anchor Token; code Openlyn/ANTRP)"
    formula = "s = (e·q)(e·k)ᵀ/(√d·σ) = (e²/σ)·q·kᵀ/√d in every layer; e = 1.3, σ = 1 (default lowers POPE acc.)"
    cost = "none (every layer's attention logits scaled: SDPA with another `scaling`)"

    expansion: float = param(1.3, low=0.0, open_low=True, doc="factor e on queries and keys (code 1.3; 1 = off)")
    suppression: float = param(1.0, low=0.0, open_low=True, doc="divisor σ of the scores (code 1.0)")
    layers: tuple = param((), doc="decoder layers to scale; () = every layer (the code)")

    zero_params = {"expansion": 1.0, "suppression": 1.0}

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layers", layer_indices(self.name, "layers", self.layers))
        if not math.isfinite(self.factor):
            raise HallucError(f"{self.name}: expansion²/suppression must be finite; got {self.factor!r}")

    @property
    def factor(self) -> float:
        return score_factor(self.expansion, self.suppression)

    def is_identity(self) -> bool:
        return self.factor == 1.0

    def chosen_layers(self, num_layers: int) -> tuple[int, ...]:
        return check_layers(self.name, self.layers or tuple(range(num_layers)), num_layers)

    def attention_edits(self, session) -> dict[int, AttentionEdit]:
        if self.is_identity():
            return {}
        layers = self.chosen_layers(session.adapter.num_layers(session.model))
        return {layer: AttentionEdit(scale=self.factor) for layer in layers}
