"""A Llama language model run by hand, layer by layer, in plain tensor code: the reference the 2025
methods' formula tests compare halluc's per-step logits against.

Eager attention written out (q/k/v projections, rotary embedding, scores, causal mask, softmax, output
projection), a KV cache of plain tensors, and a callback at every point a method acts on: the raw
scores, the probabilities, the keys a query may see, the MLP output, a layer's output. One sample, no
padding.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import halluc


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding: x·cos + rotate_half(x)·sin, with rotate_half(x) = (−x₂, x₁)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


@dataclass
class Edits:
    """Callbacks, each optional: layer index first.

    scores(layer, s (1, H, Tq, Tk), query_positions (Tq,)) -> s     raw scores q·kᵀ/√d, before the mask
    hide(layer) -> (Tk,) bool or None                                keys to remove (−inf) for every query
    probs(layer, p (1, H, Tq, Tk), v (1, H, Tk, D))                  the final probabilities and the values
    mlp(layer, x (1, T, d), f (1, T, d)) -> f                        the MLP's input and output
    layer_out(layer, h (1, T, d))                                    the residual stream after the layer
    attend(layer, s, query_positions) -> p (1, H, Tq, Tk) or None    the probabilities from the raw scores
                                                                     (replaces the mask and the softmax)
    """

    scores: Callable | None = None
    hide: Callable | None = None
    probs: Callable | None = None
    mlp: Callable | None = None
    layer_out: Callable | None = None
    attend: Callable | None = None


@dataclass
class ManualLM:
    lvlm: halluc.LVLM
    cache: list = field(default_factory=list)  # per layer (K, V) as (1, Hkv, T, D)
    length: int = 0

    @property
    def lm(self):
        return self.lvlm.model.model.language_model

    def embeddings(self, inputs: dict) -> torch.Tensor:
        """(1, T, d) the LM's input embeddings (image features in place), as the model builds them."""
        seen = []
        layer0 = self.lm.layers[0]
        handle = layer0.register_forward_pre_hook(lambda m, args, kwargs: seen.append(
            args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
        try:
            with torch.no_grad():
                self.lvlm.model(**inputs)
        finally:
            handle.remove()
        return seen[0]

    def token_embedding(self, token: int) -> torch.Tensor:
        return self.lm.embed_tokens(torch.tensor([[token]]))

    @torch.no_grad()
    def forward(self, h: torch.Tensor, edits: Edits | None = None) -> torch.Tensor:
        """h (1, T, d) the new positions' embeddings -> (1, d) final hidden state of the last position
        (before the final norm); the cache grows by T."""
        edits = edits or Edits()
        lm = self.lm
        t = h.shape[1]
        positions = torch.arange(self.length, self.length + t)
        cos, sin = lm.rotary_emb(h, positions[None])
        cos, sin = cos[:, None], sin[:, None]  # (1, 1, T, D)
        for i, layer in enumerate(lm.layers):
            attn = layer.self_attn
            heads, kv_heads, dim = lm.config.num_attention_heads, lm.config.num_key_value_heads, attn.head_dim
            x = layer.input_layernorm(h)
            q = rotate(attn.q_proj(x).view(1, t, heads, dim).transpose(1, 2), cos, sin)
            k = rotate(attn.k_proj(x).view(1, t, kv_heads, dim).transpose(1, 2), cos, sin)
            v = attn.v_proj(x).view(1, t, kv_heads, dim).transpose(1, 2)
            if len(self.cache) <= i:
                self.cache.append((k, v))
            else:
                self.cache[i] = (torch.cat([self.cache[i][0], k], 2), torch.cat([self.cache[i][1], v], 2))
            keys, values = (c.repeat_interleave(heads // kv_heads, dim=1) for c in self.cache[i])  # (1, H, Tk, D)
            tk = keys.shape[2]
            s = (q.float() @ keys.float().transpose(-1, -2)) * attn.scaling  # (1, H, Tq, Tk)
            if edits.scores is not None:
                s = edits.scores(i, s, positions)
            visible = torch.arange(tk)[None, :] <= positions[:, None]  # (Tq, Tk) causal
            hidden = edits.hide(i) if edits.hide is not None else None
            if hidden is not None:
                visible = visible & ~torch.nn.functional.pad(hidden, (0, tk - len(hidden)))[None, :]
            p = edits.attend(i, s, positions) if edits.attend is not None else None
            if p is None:
                p = s.masked_fill(~visible, float("-inf")).softmax(-1)
            if edits.probs is not None:
                edits.probs(i, p, values)
            out = (p @ values.float()).transpose(1, 2).reshape(1, t, heads * dim)
            h = h + attn.o_proj(out.to(h.dtype))
            x = layer.post_attention_layernorm(h)
            f = layer.mlp(x)
            if edits.mlp is not None:
                f = edits.mlp(i, x, f)
            h = h + f
            if edits.layer_out is not None:
                edits.layer_out(i, h)
        self.length += t
        return h[:, -1]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(1, d) -> (1, V) fp32: lm_head(norm(h))."""
        with torch.no_grad():
            return self.lvlm.model.lm_head(self.lm.norm(hidden)).float()
