"""PAI (Liu et al., ECCV 2024, arXiv 2407.21771): pay more attention to the image.

    attention:  s ← s + α·|s|  on image keys, pre-softmax, last query row, all heads, layers [2, L)
    guidance:   ℓ = γ·(log p_c − log p_u) + log p_u,  tokens with p_c < β·max p_c dropped

p_c is the with-image prompt (the boosted model), p_u the same prompt without its image. The boost is
an `AttentionEdit` (a `ScoreBoost` of strength α on its columns, the prompt's image tokens, last row
only) carried out by the halluc attention backend; the guidance is one extra view of each sample,
`Branch("text", with_image=False)`, decoded as rows of the same batch with its own KV cache
(`halluc.engine.views`), combined per step by `combine` with the engine's plausibility cutoff
(`beta`). The text-only rows have no image columns, so the same edit leaves them untouched (the
official code switches the boost off for its unconditional pass: same thing).

Cost: with guidance (γ ≠ 1) one extra batch row per sample (the text-only prompt, usually shorter);
edited attention in the chosen layers (the backend's edit path: the fused Triton kernel on CUDA,
the torch reference on CPU); no extra forward passes. α = 0 leaves the attention alone; γ = 1 (or
`use_cfg=False`) drops the branch, its cutoff and its row; both together are the identity.

Defaults and discrepancies (spec §6; official repo `LALBJ/PAI`):
  - α = 0.2, layers 2..L−1 (`--start-layer 2 --end-layer 32` on 32 layers), γ = 1.1 and β = 0.1
    are the README's commands. The argparse default of γ is 2 (`gamma=2` reproduces it).
  - Last query row only (the code: `attn_weights[:, :, -1, img_start:img_end]`); the boost adds
    α·|s| to the *masked* score in the code, which on the last row's image keys is the raw score.
    `last_row_only=False` boosts every query row of a prefill too (decode steps have one row anyway).
  - Prefill quirk: with `--use-cfg` the official `llama_modify` starts with its CFG flag set, so the
    first (prefill) conditional forward runs *without* the boost; the boost is active from the first
    decode step on. Without CFG the prefill is boosted. We boost the prefill by default
    (`boost_prefill=True`: the paper's method, the first answer token is predicted with the boosted
    attention); `boost_prefill=False` reproduces the official CFG runs. The switch touches only the
    last prompt position (its hidden states, hence its cached keys / values in the later layers).
  - Image span: the code boosts `[img_start, img_end)` of the single LLaVA image; ours boosts every
    image token of the prompt (`session.image_mask`): LLaVA-NeXT's base and tile tokens (with their
    newline tokens), Qwen2-VL's merged patches, InstructBLIP's 32 query tokens.
  - Unconditional prompt: the family's chat prompt without the image (`build_inputs(..., None, ...)`).

Families: every family (the edit needs only the image columns; the text-only view works everywhere).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from halluc.engine.steps import check_layers, layer_indices
from halluc.engine.views import ORIGINAL, Branch
from halluc.interventions.base import Method, param
from halluc.interventions.hooks import HookSpec
from halluc.interventions.registry import register
from halluc.kernels.edits import AttentionEdit, ScoreBoost

TEXT_VIEW = "text"


def default_layers(num_layers: int) -> tuple[int, ...]:
    """The official `--start-layer 2 --end-layer L`: every layer from the third on (none on 2-layer models)."""
    return tuple(range(2, num_layers))


def guide(conditional: torch.Tensor, unconditional: torch.Tensor, gamma: float) -> torch.Tensor:
    """γ·(log p_c − log p_u) + log p_u on per-view log-probs (N, V); the cutoff is the engine's."""
    return gamma * (conditional - unconditional) + unconditional


@register
@dataclass(frozen=True)
class PAI(Method):
    """Paying More Attention to Image.

    Args:
        alpha: boost α of the pre-softmax image scores, s + α|s| (README: 0.2; 0 = no boost).
        gamma: guidance strength γ against the text-only prompt (README: 1.1, argparse default 2;
            1 = no guidance, no extra row).
        beta: plausibility cutoff on the with-image view (0.1; used only with guidance).
        use_cfg: guidance on/off (the official `--use-cfg`).
        layers: decoder layers to boost; () = 2..L−1.
        last_row_only: boost only the last query row of each call (the code); False = every row.
        boost_prefill: boost the prefill's last row too (ours); False = the official CFG behaviour.
    """

    name = "pai"
    kind = "in-model"
    paper = "Liu et al., ECCV 2024 (arXiv 2407.21771)"
    formula = "s ← s + α|s| on image keys (last row);  ℓ = γ(log p_c − log p_u) + log p_u"
    cost = ("edited attention in layers 2..L−1; with guidance (γ ≠ 1) 1 extra batch row per sample "
            "(text-only prompt, own KV cache)")
    alpha: float = param(0.2, low=0.0, doc="boost of the image scores, s + α|s| (0 = no boost)")
    gamma: float = param(1.1, low=0.0, doc="guidance γ vs the text-only prompt (README 1.1, argparse 2; 1 = off)")
    beta: float = param(0.1, low=0.0, high=1.0, doc="plausibility cutoff on the with-image view (with guidance)")
    use_cfg: bool = param(True, doc="guidance against the text-only prompt (official --use-cfg)")
    layers: tuple = param((), doc="decoder layers to boost; () = 2..L−1")
    last_row_only: bool = param(True, doc="boost only the last query row (the code); false = every row")
    boost_prefill: bool = param(True, doc="boost at prefill too; false = the official CFG quirk (decode only)")

    example_params = {"layers": (0, 1)}
    zero_params = {"alpha": 0.0, "gamma": 1.0}

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layers", layer_indices(self.name, "layers", self.layers))

    @property
    def guided(self) -> bool:
        return self.use_cfg and self.gamma != 1.0

    def is_identity(self) -> bool:
        return self.alpha == 0 and not self.guided

    def chosen_layers(self, num_layers: int) -> tuple[int, ...]:
        return check_layers(self.name, self.layers or default_layers(num_layers), num_layers)

    # ---- guidance -------------------------------------------------------------------------
    def branches(self, request) -> list[Branch]:
        return [Branch(TEXT_VIEW, with_image=False)] if self.guided else []

    def combine(self, views):
        return guide(views[ORIGINAL], views[TEXT_VIEW], self.gamma)

    def plausibility_cutoff(self):
        return self.beta

    # ---- attention boost ------------------------------------------------------------------
    def score_boost(self) -> ScoreBoost:
        """s + α|s| on the edit's columns (the prompt's image tokens, filled in by `attach`)."""
        return ScoreBoost(float(self.alpha), last_row_only=self.last_row_only)

    def attention_edits(self, session) -> dict[int, AttentionEdit]:
        if self.alpha == 0:
            return {}
        boost = self.score_boost() if self.boost_prefill else None  # see hooks(): switched on after the prefill
        edits = {layer: AttentionEdit(boost=boost)
                 for layer in self.chosen_layers(session.adapter.num_layers(session.model))}
        session.state[self.name] = edits
        return edits

    def hooks(self, session) -> list[HookSpec]:
        if self.alpha == 0 or self.boost_prefill:
            return []
        boost = self.score_boost()  # one object for every step: the edits' column cache keeps its tensors

        def switch(hidden, ctx):  # layers.0 pre-hook: no boost in the prefill forward, α after
            value = None if ctx.prefill else boost
            for edit in session.state.get(self.name, {}).values():
                edit.boost = value

        return [HookSpec("layers.0", switch, kind="forward_pre")]

