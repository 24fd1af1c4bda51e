"""CCA (Xing et al., NeurIPS 2024, arXiv 2410.15926): concentric positions and a concentric causal mask.

    pos(i, j) = s + min(i, j, H−1−i, W−1−j);  text after the image shifted by −(H·W − R), R = #rings;
    inside the image: a query on ring r sees the image keys on rings ≤ r (its own ring both ways)

s is the position id the image's first token would have had. On LLaVA-1.5's 24×24 grid this gives
12 ids (s..s+11) for 576 tokens and shifts the following text by −564 (`cca_forward` in the
official repo). Prefix text stays visible to the image; the text after it sees every image token.

Hook point: `model` (forward pre, with kwargs), every step:
  - prefill: replaces `position_ids` with the concentric ones and passes an explicit 4-D boolean
    `attention_mask` (B, 1, T, T) = causal & padding, with each image block replaced by the ring
    mask. transformers 5.23 hands a 4-D mask to the attention function unchanged (SDPA, eager and
    the halluc backend, which runs SDPA or the torch reference with it; FlashAttention cannot take
    one and is refused). `halluc/kernels/edits.py` has no per-(query, key) mask field, so the mask
    travels this way rather than as an `AttentionEdit`.
  - decode: in transformers 5.23 `generate` builds `position_ids` once from the padding mask
    (cumsum − 1), appends last + 1 after every step and slices the new token's id into each call
    (Llama has no `cache_position` any more); those ids never see our rewrite, so each step
    subtracts the row's shift recorded at prefill. Cached keys keep their concentric rotations.
Cost: none beyond building the ids and the (B, T, T) mask once per call.
Families: LLaVA-1.5 (`llava`) only (one square grid per image, 1-D RoPE); others are refused.

Which weights: the published numbers (POPE 86.86 / 85.54, CHAIR 43.0 / 11.5, MME-hal 641.66) are
for the CCA-*trained* checkpoint `xing0047/cca-llava-1.5-7b` (full LLaVA-1.5 recipe with CCA on).
That checkpoint is in the LLaVA codebase's format; convert it once with
`halluc.modeling.cca_checkpoint.convert(cca_dir, base_dir, out_dir)` (base: a local copy of
`llava-hf/llava-1.5-7b-hf`, same CLIP, projector shape and tokenizer), then
`halluc.load(out_dir)` and method `cca`. Applied to a vanilla LLaVA-1.5 checkpoint, CCA is
training-free but out of distribution (the paper reports no such numbers): an ablation only.

Zero strength: `positions=False, mask=False` (both parts off) is the identity; each alone is the
corresponding ablation.

Paper / code discrepancies and our choices:
  - the official code re-initialises the batch's position ids inside its per-sample loop, so only
    the last sample's ids survive for batch > 1; ours builds every row's own ids (batch == single).
  - several images in one row each get their own rings (the official code assumes one 576-token image).
  - prompts follow the llava-hf chat template, not the repo's vicuna_v1 system prompt.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from halluc.engine.steps import call_positions
from halluc.errors import HallucError
from halluc.interventions.base import Method, param
from halluc.interventions.hooks import HookSpec
from halluc.interventions.registry import register
from halluc.modeling.base import ImageSpan


def ring_ids(rows: int, cols: int) -> torch.Tensor:
    """(rows * cols,) ring index in raster order: distance to the grid's border (0 = border)."""
    i = torch.arange(rows)[:, None]
    j = torch.arange(cols)[None, :]
    return torch.minimum(torch.minimum(i, j), torch.minimum(rows - 1 - i, cols - 1 - j)).flatten()


def concentric_positions(position_ids: torch.Tensor, spans: list[list[ImageSpan]]) -> torch.Tensor:
    """(B, T) position ids with every image's tokens on s + ring and the text after it shifted back."""
    new = position_ids.clone()
    for row, row_spans in enumerate(spans):
        for span in sorted(row_spans, key=lambda s: int(s.positions[0])):
            p = span.positions.to(new.device)
            ring = ring_ids(*span.grid).to(new.device)
            new[row, p] = new[row, p[0]] + ring  # s already carries the shifts of earlier images
            new[row, p[-1] + 1:] -= len(p) - (int(ring.max()) + 1)
    return new


def concentric_mask(padding: torch.Tensor, spans: list[list[ImageSpan]]) -> torch.Tensor:
    """(B, 1, T, T) bool: causal & padding, with each image block replaced by the ring rule."""
    b, t = padding.shape
    mask = torch.ones(t, t, dtype=torch.bool, device=padding.device).tril()[None] & padding.bool()[:, None, :]
    for row, row_spans in enumerate(spans):
        for span in row_spans:
            p = span.positions.to(padding.device)
            ring = ring_ids(*span.grid).to(padding.device)
            mask[row, p[:, None], p[None, :]] = ring[None, :] <= ring[:, None]  # (query, key)
    return mask[:, None]


@register
@dataclass(frozen=True)
class CCA(Method):
    """Concentric Causal Attention.

    Args:
        positions: concentric RoPE position ids for image tokens (and the shift of the text after).
        mask: the concentric causal mask inside each image at prefill.
        Both False = the identity.
    """

    name = "cca"
    fixed_rows = True  # per-row state from the prefill: refused with OPERA's re-batching search
    paper = "Xing et al., NeurIPS 2024 (arXiv 2410.15926)"
    formula = "pos(i,j) = s + min(i, j, H−1−i, W−1−j); ring r attends to rings ≤ r"
    cost = "none (position ids and a 4-D mask built once, at prefill)"
    families = frozenset({"llava"})
    positions: bool = param(True, doc="concentric position ids (text after the image shifted back)")
    mask: bool = param(True, doc="concentric causal mask inside the image (prefill)")

    zero_params = {"positions": False, "mask": False}
    needs = frozenset({"grid"})

    def is_identity(self) -> bool:
        return not (self.positions or self.mask)

    def claims(self) -> frozenset[str]:
        return frozenset() if self.is_identity() else frozenset({"position_ids"})

    def hooks(self, session) -> list[HookSpec]:
        if self.is_identity():
            return []
        implementation = str(session.adapter.text_config(session.model)._attn_implementation)
        if self.mask and "flash" in implementation:
            raise HallucError(f"cca: the concentric mask needs sdpa, eager or halluc attention, not {implementation}")
        adapter, model, state = session.adapter, session.model, session.state

        def rewrite(_, ctx):  # model pre-hook: new keyword arguments for the call
            ids = ctx.kwargs.get("input_ids")
            if ids is None:
                raise HallucError("cca needs input_ids (it finds the image tokens there)")
            given, positions = ctx.kwargs.get("attention_mask"), call_positions(ctx.kwargs, ids)
            if not ctx.prefill:
                return {"position_ids": positions - state[self.name][:, None].to(positions.device)}
            spans = adapter.image_spans(model, {"input_ids": ids})  # the image is in this call
            new = concentric_positions(positions, spans) if self.positions else positions
            state[self.name] = positions[:, -1] - new[:, -1]  # (B,) shift for the decode steps
            changed = {"position_ids": new}
            if self.mask:
                padding = given if given is not None and given.dim() == 2 else torch.ones_like(ids)
                changed["attention_mask"] = concentric_mask(padding, spans)
            return changed

        return [HookSpec("model", rewrite, kind="forward_pre")]

