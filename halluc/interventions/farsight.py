"""FarSight (Tang et al., CVPR 2025, arXiv 2505.16652): attention registers in the causal mask's upper triangle.

    W = S⊙C + P,  Â = softmax(W)⊙C,  P_ij = −(σ(1 + π_i)/2 + s_h)·(j − i) for j > i,  π_i = 1 − i/(2(L−1))

S = q·kᵀ/√d, C the causal (lower-triangle) mask, σ = log 256 / log 1024 = 0.8, s_h = 2^(−8(h+1)/H) the
ALiBi slope of head h. The future slots j > i hold logits P that take softmax mass and are then
multiplied away, so row i sums to < 1 ("registers" soaking up attention that would pile onto outlier
tokens). Since P does not depend on the scores, the registers of row i act as one extra key of value 0
with logit R_hi = log Σ_{Δ=1..n_i} exp(−c_hi·Δ) (a geometric series, closed form), n_i = L − 1 − i:
an `AttentionEdit.null_logit`, exact, on every decoder layer (the patch replaces every layer's attention).

variant="paper" (default): the paper's registers with a KV cache. The prompt's rows get theirs at the
prefill (L = the prompt's length); a decode row is the last row when it is computed and has no future
slot, exactly as in the release's recompute, so decode runs plain SDPA. Hence the first new token is
exactly the recompute's with live registers; later tokens differ from a cache-less recompute in two
ways, our deviations: the prompt rows keep the registers of L = prompt length (a recompute grows L,
which lengthens the series and shifts π_i), and generated rows never get registers (a recompute gives
each one once it is no longer last; its cached keys and values cannot change afterwards).
variant="code": the release as it runs (Shell/farsight_patch.py @ 1f334e2b with eval_chair.py
--farsight). It adds the model's 4-D additive causal mask (finfo.min above the diagonal) to W after
P, so every register logit is ≈ −∞, takes no mass, and the forward is plain causal attention; it
returns no cache (`use_cache=False`, each step recomputes the sequence), which gives the cached
forward's tokens. So the release is vanilla decoding, and this variant is the identity (no edit; its
equality with a literal reading of the patch is tested).

Paper / code discrepancies and our choices (spec methods-2026 §6):
  - the release masks its own registers away (above); "paper" keeps them (the spec's choice: follow
    the patch's P, not the mask addition that cancels it), "code" reproduces the wipe.
  - the release has no KV cache and recomputes every row each step (O(n²) per token); ours is cached
    with the deviations above (documented, spec §6.3 (b)). The paper's P schedule could not be read
    (no paper text offline): P is the patch's.
  - positions: the patch counts i and L over the padded batch row (batch 1 in its scripts) and zeroes P
    on padding; ours counts the row's real tokens only (left padding changes nothing: batch == single).
  - fp32 registers and softmax (the patch builds P and takes the softmax in fp16).
  - FarSight.py (`AttnAdapter`, another commit) is a different algorithm wired to no script: not ported.
  - Gemma 3's image block attends both ways; its image rows still get registers over every later position.
Cost: none at decode (plain SDPA); the prefill runs the edited attention (the Triton kernel on CUDA, the
torch reference on CPU).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from halluc.engine.steps import check_layers, layer_indices
from halluc.interventions.base import Method, param
from halluc.interventions.registry import register
from halluc.kernels.edits import AttentionEdit

SIGMA = math.log(256) / math.log(1024)  # the patch's default decay (= 0.8)


def alibi_slopes(heads: int) -> torch.Tensor:
    """(H,) float64: s_h = 2^(−8(h+1)/H), the patch's per-head slopes."""
    return 2.0 ** (-8.0 * torch.arange(1, heads + 1, dtype=torch.float64) / heads)


def register_logits(padding: torch.Tensor, heads: int, sigma: float, alibi: bool) -> torch.Tensor:
    """(B, H, T) fp32: R_hi = log Σ_{Δ=1..n_i} exp(−c_hi Δ), the log-mass of row i's registers (−inf: none).

    padding (B, T) 1 for real tokens. Over each row's real tokens: i its rank, L their count,
    n_i = L − 1 − i later tokens, π_i = 1 − i / (2(L − 1)), c_hi = σ(1 + π_i)/2 + s_h (s_h = 0 without ALiBi).
    Σ_{Δ=1..n} e^{−cΔ} = e^{−c}(1 − e^{−cn}) / (1 − e^{−c}), and n for c = 0.
    """
    real = padding.bool()
    rank = real.long().cumsum(-1) - 1  # (B, T)
    length = real.sum(-1, keepdim=True)  # (B, 1)
    later = torch.where(real, length - 1 - rank, 0).double()[:, None, :]  # (B, 1, T) n_i
    progress = 1.0 - rank.double() / (2.0 * (length - 1).clamp_min(1))  # (B, T) π_i
    slope = alibi_slopes(heads) if alibi else torch.zeros(heads, dtype=torch.float64)
    c = (0.5 * sigma * (1.0 + progress))[:, None, :] + slope.to(padding.device)[None, :, None]  # (B, H, T)
    safe = c.clamp_min(1e-12)
    geometric = -safe + torch.log(-torch.expm1(-safe * later)) - torch.log(-torch.expm1(-safe))
    logits = torch.where(c > 0, geometric, later.log())
    return torch.where(later > 0, logits, float("-inf")).float()


@register
@dataclass(frozen=True)
class FarSight(Method):
    """FarSight's causal-mask registers.

    Args:
        sigma: decay σ of the register logits per position (the patch's log 256 / log 1024 = 0.8).
        alibi: add the per-head ALiBi slopes to the decay (the patch's default; --farsight-no-alibi drops it).
        variant: "paper" (live registers, KV cache) or "code" (the release: registers masked away = vanilla).
        layers: decoder layers to edit; () = every layer (the patch).
    """

    name = "farsight"
    paper = "Tang et al., CVPR 2025 (arXiv 2505.16652)"
    formula = "Â = softmax(S⊙C + P)⊙C, P_ij = −(σ(1+π_i)/2 + s_h)(j−i) on j > i: registers take mass, then dropped"
    cost = "none at decode (plain attention); edited attention at the prefill"

    sigma: float = param(SIGMA, low=0.0, doc="decay of the register logits per position (0.8)")
    alibi: bool = param(True, doc="add ALiBi head slopes 2^(-8(h+1)/H) to the decay")
    variant: str = param("paper", choices=("paper", "code"), doc="paper: live registers; code: the release (vanilla)")
    layers: tuple = param((), doc="decoder layers to edit; () = every layer")

    zero_params = {"variant": "code"}

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "layers", layer_indices(self.name, "layers", self.layers))

    def is_identity(self) -> bool:
        return self.variant == "code"

    def attention_edits(self, session) -> dict[int, AttentionEdit]:
        if self.is_identity():
            return {}
        num_layers = session.adapter.num_layers(session.model)
        layers = check_layers(self.name, self.layers or tuple(range(num_layers)), num_layers)
        ids = session.inputs["input_ids"]
        padding = session.inputs.get("attention_mask")
        padding = torch.ones_like(ids) if padding is None else padding
        heads = session.adapter.text_config(session.model).num_attention_heads
        logits = register_logits(padding, heads, self.sigma, self.alibi)  # (B_in, H, T)
        return {layer: AttentionEdit(null_logit=logits) for layer in layers}
