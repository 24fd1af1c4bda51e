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
  - finished beams are length-normalised as the official code's transformers 4.29 did, by the length of
    the hypothesis in the `input_ids` it passed to `generate` (without the EOS token when a beam ends on
    it), not as transformers 5 does (by the generated tokens): `normalise="whole"` (default, both presets);
    "generated" is 5.x's. The two can pick different finished beams (a short answer weighs more against a
    long prompt). The prompt's part of that length, per family (`counted_prompt`):
      LLaVA-1.5 (`minigpt4/models/llava.py`): `[bos, text before, IMAGE_TOKEN_INDEX, text after]`, so the
        image counts as ONE token (its 576 tokens enter only inside the forward): text tokens + 1;
      InstructBLIP (`blip2_vicuna_instruct.py`) and MiniGPT-4 (`mini_gpt4.py`): `generate(inputs_embeds=…)`
        with no `input_ids`, which 4.29 replaces by a dummy `[[bos]]`: the whole prompt counts as 1 token;
      Shikra (not a halluc family) wrote every image patch token into `input_ids`;
      every family the official code never ran: the LLaVA rule, one token per image (the family's image
        tokens, `image_mask`; markers a processor writes around or between them, as Qwen's vision
        start/end or Idefics3's and Pixtral's row markers, count as the text they are). Left padding is
        not counted (4.29 counted a padded batch's padding; here a sample's length is its own);
  - the early-stop heuristic is 4.29's with the same length: the best of all 2K continuations (an EOS
    one included) divided by the hypothesis length with the new token; 5.x divides the best running
    beam by the generated length;
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

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
            4.29: by the whole hypothesis, each image counted as one token) or "generated" (transformers 5).
    """

    name = "opera"
    kind = "decoding"
    replaces_search = True
    batched_search = True  # alone, each sample keeps its own beams, rollback and length in one batched search
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
        # an empty column set: OPERA reads the attention row only, and attach would otherwise give the edit the
        # image mask, whose rows are per sample while the search's batch shrinks as samples finish
        edit = AttentionEdit(return_attention_row=True, columns=torch.zeros(1, 0, dtype=torch.bool))
        session.state[self.name] = edit  # the search reads the rows this edit returns
        return {self.layer % layers: edit}

    def search(self, session) -> OperaSearch:
        return OperaSearch(self.settings(), session.state[self.name], session.image_mask, counted_prompt(session))


OFFICIAL_EMBEDS_FAMILIES = ("instructblip",)  # the official code passed them as inputs_embeds (4.29: one dummy BOS)


def counted_prompt(session) -> torch.Tensor:
    """(B,) each prompt's length as the official code's `input_ids` held it (its transformers 4.29 normalised
    finished beams by it): 1 for a family passed as embeddings, else the text tokens plus one per image."""
    image = session.image_mask  # (B, T)
    if session.lvlm.family in OFFICIAL_EMBEDS_FAMILIES:
        return torch.ones(image.shape[0], dtype=torch.long)
    mask = session.inputs.get("attention_mask")
    present = mask.bool() if mask is not None else torch.ones_like(image)  # left padding is not counted
    return (present & ~image).sum(-1) + image.any(-1).long()  # one image per sample (`Request.images`)
