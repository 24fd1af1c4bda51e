"""ONLY (Wan et al., ICCV 2025, arXiv 2507.00898): one-layer intervention.

    side:  P̃ = P of layer ℓ̃ at the last query, entries > μ+σ of their region (text / image) zeroed,
           heads with E_text/E_image < its mean over heads zeroed;  a = o_proj(P̃·V)
           u = norm_in(a) + 0.2·x_{L−1};  u = u + MLP_{L−1}(norm_post(u));  ℓ_cd = lm_head(norm(u)) + 0.5·ℓ
    logits: D = Σ|softmax(ℓ) − softmax(ℓ_cd)|;  ℓ' = ℓ + α⁺·ℓ_cd if D < γ else (1+α⁻)·ℓ − α⁻·ℓ_cd;
            tokens with ℓ < log β + max ℓ dropped

P are the layer's attention probabilities, V its values, x_{L−1} the last layer's residual input, E
the entropy of a head's (renormalised) attention within a region. The main path is untouched: the
side branch reuses layer ℓ̃'s probabilities and values and joins at the last layer's FFN, for the
last position only, at every step. Regions per row: image = the image tokens; text = every other
real token (generated ones included) except the row's first text token (BOS on Llama LMs: the
attention sink), which keeps its attention and belongs to neither.
Hook points: an `AttentionEdit` with a `side_output` at layer ℓ̃ (it only reads: the attention stays
on SDPA and the last row is computed alone; a CPU decode step computes that row once and takes the
output from it too), `layers.{L−1}` (forward pre: x_{L−1} at the last
position), `lm_head` (forward: the combination on the last position).
Cost: no extra pass or cache: one attention row, times V, and an `o_proj` at layer ℓ̃, one norm + MLP
of the last layer and one lm_head row per sample and step.
Families: every family whose decoder layers are pre-norm blocks (refused on Gemma 3's sandwich norms
and on parallel blocks such as Cohere's, where the code's join point does not exist).

Paper / code discrepancies and our choices (spec Part A §1):
  - the paper's "textual enhancement" has no amplification factor in the code: it zeroes the outlier
    entries (> μ + σ, unbiased σ, per region) and the low-ratio heads and does not renormalise; so do
    we. Heads whose ratio ties the mean are kept (the code's `≥ mean`); a region whose cleaned mass is
    0 gets entropy 0 (text) or +inf (image), as in the code.
  - the constants 0.2 (residual) and 0.5 (final mix) are hard-coded in the code, not parameters.
  - the distance the code calls `tvd` / `js_gamma` is the L1 distance (2x total variation); ours is
    the same L1, per row (the code's sum also runs over the batch: batch 1 only).
  - the last layer is hard-coded as 31 in the code; ours is L − 1 of any depth. The code's InstructBLIP
    path skips norm_in on the side output (`side_norm=False`); its Qwen-VL-Chat path adds the last
    layer's attention output instead of its input, which is not offered (Qwen2-VL is another model).
  - defaults: α⁺ = 3, α⁻ = 1, β = 0.1, ℓ̃ = 0 and γ = 0.2 (POPE script; CHAIR and MME use 0.25, MME
    β = 0.4). The scripts sample (T = 1, top-p 1); a method cannot choose the decoding, so that is the
    run's setting; greedy and beam search use the same logits.
  - the code runs the side branch over every prompt position; only the last one is used, and only it
    is computed here. P̃·V in fp32 (the code: fp16).
  - stacked with a contrast method, only the original view's logits are rewritten; contrast views keep
    their plain prediction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from halluc.engine.early_exit import LogitLens
from halluc.engine.regions import Regions, extend_regions, text_region
from halluc.engine.steps import check_layers, replace_last
from halluc.interventions.base import Method, param
from halluc.interventions.hooks import HookSpec
from halluc.interventions.registry import register
from halluc.kernels.edits import AttentionEdit

RESIDUAL = 0.2  # the code's weight of x_{L-1} in the side branch
MIX = 0.5  # the code's weight of the regular logits in the side logits


def enhanced_attention(row: torch.Tensor, regions: Regions | torch.Tensor) -> torch.Tensor:
    """The side branch's attention row: outliers of each region zeroed, then the heads whose text / image
    entropy ratio is below the mean over heads zeroed. row (B, H, Tk), regions (text, image) over its keys,
    a `Regions` or (B, 2, Tk) bool -> (B, H, Tk), not renormalised."""
    regions = regions if isinstance(regions, Regions) else Regions.of(regions)
    cleaned = row.masked_fill(regions.outliers(row), 0.0)
    entropy = regions.entropy(cleaned)  # (B, H, 2)
    e_text = entropy[..., 0].nan_to_num(nan=0.0, posinf=math.inf)  # no mass: 0 for text, +inf for the image
    e_image = entropy[..., 1].nan_to_num(nan=math.inf, posinf=math.inf)
    ratio = e_text / e_image  # (B, H)
    return cleaned.masked_fill_((ratio < ratio.mean(-1, keepdim=True))[..., None], 0.0)  # ties (a NaN mean) keep


def adaptive_logits(final: torch.Tensor, side: torch.Tensor, alpha_pos: float, alpha_neg: float, gamma: float,
                    beta: float) -> torch.Tensor:
    """final ℓ and side ℓ_cd (N, V) -> (N, V): collaborate (ℓ + α⁺ℓ_cd) when the L1 distance of their
    distributions is below γ, else contrast ((1+α⁻)ℓ − α⁻ℓ_cd); tokens with ℓ < log β + max ℓ dropped."""
    final, side = final.float(), side.float()
    close = torch.linalg.vector_norm(final.softmax(-1) - side.softmax(-1), 1, -1, keepdim=True) < gamma  # (N, 1) L1
    on_final = torch.where(close, 1.0, 1.0 + alpha_neg)  # (N, 1) the two rules as one weighted sum
    on_side = torch.where(close, alpha_pos, -alpha_neg)
    mixed = torch.addcmul(on_final * final, on_side, side)
    if beta > 0:  # (also drops tokens another edit of the logits removed: −inf < any cutoff)
        return mixed.masked_fill_(final < final.amax(-1, keepdim=True) + math.log(beta), -math.inf)
    return mixed.masked_fill_(final == -math.inf, -math.inf)  # removed by another edit: stays removed


@dataclass
class _State:
    side: torch.Tensor | None = None  # (B, d) o_proj(P̃·V) at the last position, this forward
    last_input: torch.Tensor | None = None  # (B, d) x_{L-1} at the last position, this forward


@register
@dataclass(frozen=True)
class ONLY(Method):
    """One-layer intervention.

    Args:
        alpha_pos: α⁺, weight of the side logits when the two agree (scripts: 3).
        alpha_neg: α⁻, contrast strength when they differ (scripts: 1).
        beta: plausibility cutoff on the regular logits (POPE / CHAIR 0.1, MME 0.4; 0 = none).
        gamma: γ, threshold on the L1 distance (POPE 0.2; CHAIR / MME 0.25).
        layer: ℓ̃, the layer whose attention the side branch reuses (0).
        side_norm: the last layer's input norm on the side output (LLaVA code: yes; InstructBLIP code: no).
    """

    name = "only"
    paper = "Wan et al., ICCV 2025 (arXiv 2507.00898)"
    formula = "ℓ_cd = layer ℓ̃'s text-enhanced attention via the last FFN; ℓ + α⁺ℓ_cd if D < γ, else (1+α⁻)ℓ − α⁻ℓ_cd"
    cost = "no extra pass: one attention row x V, the last layer's MLP and one lm_head row per sample and step"
    needs = frozenset({"pre_norm_block"})  # the side output joins the last layer between its two norms

    alpha_pos: float = param(3.0, low=0.0, doc="α⁺: weight of the side logits when the distributions agree")
    alpha_neg: float = param(1.0, low=0.0, doc="α⁻: contrast strength when they differ")
    beta: float = param(0.1, low=0.0, high=1.0, doc="plausibility cutoff on the regular logits; 0 = none")
    gamma: float = param(0.2, low=0.0, high=2.0, doc="γ on the L1 distance (POPE 0.2, CHAIR/MME 0.25)")
    layer: int = param(0, low=0, doc="ℓ̃: layer whose attention the side branch reuses")
    side_norm: bool = param(True, doc="the last layer's input norm on the side output (InstructBLIP code: off)")

    zero_params = {"alpha_pos": 0.0, "alpha_neg": 0.0, "beta": 0.0}

    def is_identity(self) -> bool:
        return self.alpha_pos == 0 and self.alpha_neg == 0 and self.beta == 0

    def attention_edits(self, session) -> dict[int, AttentionEdit]:
        if self.is_identity():
            return {}
        adapter, model = session.adapter, session.model
        check_layers(self.name, (self.layer,), adapter.num_layers(model))
        o_proj = adapter.resolve(model, f"layers.{self.layer}.attn.o_proj")
        image = session.image_mask  # (B_in, T)
        prompt = torch.stack([text_region(image, session.inputs.get("attention_mask")), image], 1)  # (B_in, 2, T)
        # the regions of every key the call can reach (generated tokens are text): built once, sliced per step
        every = Regions.of(extend_regions(prompt, prompt.shape[-1] + session.decoding.max_new_tokens))
        per_rows: dict[int, Regions] = {}  # running rows -> regions (beams: each input row repeated in place)
        state = session.state.setdefault(self.name, _State())

        def side(row, values):  # (B, H, Tk) fp32 last query's final attention, (B, H, Tk, D) values
            rows, tk = row.shape[0], row.shape[-1]
            if rows not in per_rows:
                per_rows[rows] = every.rows(rows // prompt.shape[0])
            regions = per_rows[rows]
            if tk > regions.inside.shape[-1]:  # a call that runs past max_new_tokens: rebuilt once, longer
                regions = per_rows[rows] = Regions.of(extend_regions(prompt, 2 * tk)).rows(rows // prompt.shape[0])
            row = enhanced_attention(row, regions.upto(tk))  # (B, H, Tk)
            heads = (row[:, :, None, :] @ values.float()).flatten(1)  # (B, H*D): heads side by side, as o_proj reads
            state.side = o_proj.forward(heads.to(o_proj.weight.dtype))

        return {self.layer: AttentionEdit(columns=image, side_output=side)}

    def hooks(self, session) -> list[HookSpec]:
        if self.is_identity():
            return []
        adapter, model = session.adapter, session.model
        last = adapter.num_layers(model) - 1
        norm_in, norm_post, mlp = (adapter.resolve(model, f"layers.{last}.{part}")
                                   for part in ("input_norm", "post_attn_norm", "mlp"))
        lens = LogitLens.of(adapter, model)
        state = session.state.setdefault(self.name, _State())

        def keep_input(hidden, ctx):  # layers.{L-1}, before it runs
            state.last_input = hidden[:, -1]

        def combine(output, ctx):  # lm_head: (B, T, V); the last position predicts the next token
            # the side branch through the last layer's FFN; modules called without their hooks
            side = norm_in.forward(state.side) if self.side_norm else state.side
            u = torch.add(side, state.last_input, alpha=RESIDUAL)  # (B, d)
            u = u.add_(mlp.forward(norm_post.forward(u)))  # (B, d) a fresh tensor: in place
            final = output[:, -1].float()
            side_logits = torch.add(lens(u), final, alpha=MIX)  # (B, V)
            rewritten = adaptive_logits(final, side_logits, self.alpha_pos, self.alpha_neg, self.gamma, self.beta)
            return replace_last(output, rewritten, ctx.original_rows(final.shape[0], final.device))

        return [HookSpec(f"layers.{last}", keep_input, kind="forward_pre"),
                HookSpec("lm_head", combine)]

