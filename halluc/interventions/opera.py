"""OPERA (Huang et al., CVPR 2024): beam search with an over-trust penalty and retrospection-allocation.

    score(c) = ℓ_c − λ·max_j 1e−7·∏_{i≥j} σ·w_ij    over each beam's top-N candidates c, where w is the
    last layer's attention (max over heads, row-normalised) among the response tokens and c itself;
    the first 10 response tokens get +λ·(c's attention mass on the image) instead; when one column j*
    stays the argmax more than r times for every beam, roll back to token j*+1 and choose again.

The search loop is `halluc.engine.opera_search.OperaSearch`, which `search()` hands to generation (it
replaces HF's beam search). The
attention rows come from one layer only, through the kernel's `return_attention_row` (no
`output_attentions`, no eager attention on the other layers).

Defaults are the paper's (σ 50, r 15, N 5, λ 1, beams 5, history window 512); `preset="fast"` is the
README's efficient setting (r 25, N 1; a value other than the paper default wins over the preset).

Paper / code discrepancies and our choices (official `opera_beam_search`, spec §5):
  - the code's main forward and its N candidate forwards per step become one batched forward over
    K·N rows, each with its own copy of the cache (the code shallow-copies `model_kwargs`, which on
    transformers >= 4.36 shares one mutable cache between candidates: OPERA issue #16); the chosen
    candidates' rows continue the search, so a step costs one forward of K·N rows;
  - column products in float64 log-space (the code multiplies σ-scaled fp16 attention in an fp16
    buffer, which under/overflows);
  - rollback: decided per sample (the code takes the mode location and the "every beam" test over
    the whole batch, so batch size changed the results) and per beam ancestry (the code counts per
    beam slot, mixing hypotheses); the cache is rebuilt by cropping to the prompt and one forward
    of the restored response (the code re-prefills everything); its bare try/except fallback is gone;
    the code clears rejected tokens at the wrong window positions, ours clears those after the target;
  - beams = 1 (greedy) is allowed (the code asserts beams > 1);
  - candidates renormalised by log-softmax over the candidate set, as in the paper and the code;
  - finished beams are length-normalised as the official code's transformers 4.29 did (by the whole
    sequence, prompt included; without the EOS token when a beam ends on it), not as transformers 5
    does (by the generated tokens): `normalise="whole"` (default, both presets); "generated" is 5.x's.
    The two can pick different finished beams (a short answer weighs more against a long prompt).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from halluc.engine.opera_search import OperaSearch, OperaSettings
from halluc.errors import HallucError
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register
from halluc.kernels.edits import AttentionEdit
from halluc.limits import MAX_BEAMS, MAX_CANDIDATES

FAST = {"threshold": 25, "candidates": 1}  # README's efficient setting


@register
@dataclass(frozen=True)
class OPERA(Method):
    """Over-trust penalty and retrospection-allocation beam search.

    Args:
        beams: beam width (5); the call's num_beams must be 1 or this.
        candidates: candidates per beam, N (5).
        scale: σ on the attention before the column products (50).
        threshold: rollback once a location recurs more than r times (15).
        weight: λ on the penalty (1.0).
        window: how many response steps back a rollback can go (512).
        layer: decoder layer whose attention is read (-1 = last, as the paper).
        preset: "paper" or "fast" (threshold 25, candidates 1).
        normalise: how finished beams are length-normalised: "whole" (the official code on transformers
            4.29: by the whole sequence, prompt included) or "generated" (transformers 5: by the new tokens).
    """

    name = "opera"
    kind = "decoding"
    replaces_search = True
    modes = ("greedy", "beam")  # greedy = its beam search with its own beams; never sampling
    paper = "Huang et al., CVPR 2024"
    formula = "beam search on ℓ_c − λ·max_j ∏_{i≥j} σ·w_ij over top-N candidates; rollback after r repeats"
    cost = ("beam search over beams x candidates rows per step (25 rows at the defaults, one forward) with the "
            "OPERA layer in the halluc attention kernel; each rollback re-runs the response once")

    beams: int = param(5, low=1, high=MAX_BEAMS, doc="beam width")
    candidates: int = param(5, low=1, high=MAX_CANDIDATES, doc="candidates per beam (N)")
    scale: float = param(50.0, low=0.0, open_low=True, doc="σ: attention scale in the column products")
    threshold: int = param(15, low=1, doc="r: roll back once a location recurs more than r times")
    weight: float = param(1.0, low=0.0, doc="λ: weight of the penalty")
    window: int = param(512, low=1, doc="how many response steps back a rollback can go")
    layer: int = param(-1, doc="decoder layer whose attention is read (negative counts from the end)")
    preset: str = param("paper", choices=("paper", "fast"), doc="'fast': threshold 25, candidates 1")
    normalise: str = param("whole", choices=("whole", "generated"),
                           doc="finished beams divided by the whole length (official) or the generated length")

    example_params = {"preset": "fast", "beams": 2}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.preset == "fast":
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for name, value in FAST.items():
                if getattr(self, name) == defaults[name]:
                    object.__setattr__(self, name, value)

    def settings(self) -> OperaSettings:
        return OperaSettings(beams=self.beams, candidates=self.candidates, scale=self.scale,
                             threshold=self.threshold, weight=self.weight, window=self.window,
                             normalise=self.normalise)

    def attention_edits(self, session):
        layers = session.adapter.num_layers(session.model)
        if not -layers <= self.layer < layers:
            raise HallucError(f"opera: layer {self.layer} does not exist ({session.lvlm.family} has {layers} layers)")
        edit = AttentionEdit(return_attention_row=True)
        session.state[self.name] = edit  # the search reads the rows this edit returns
        return {self.layer % layers: edit}

    def search(self, session) -> OperaSearch:
        if len(session.views) > 1:
            raise HallucError(f"opera replaces the search; it cannot be stacked with a method that adds decoding "
                              f"branches ({', '.join(session.views[1:])})")
        if session.inputs["input_ids"].shape[0] != 1:
            raise HallucError("opera searches one sample at a time")
        return OperaSearch(self.settings(), session.state[self.name], session.image_mask)
