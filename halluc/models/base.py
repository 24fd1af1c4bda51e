"""The adapter contract: where a model family keeps its parts, and the few behaviours that differ.

Methods reach a model only through its adapter, never through HF attribute paths of their own.
An adapter is mostly data (module paths); the behaviours (prompting, image positions, grids,
vision CLS attention) are small per-family overrides in `halluc/models/<family>.py`.

Canonical hook points, resolved by `Adapter.resolve`:
    "layers.{i}"             decoder layer i (input: residual stream before its input norm)
    "layers.{i}.attn"        its self-attention module
    "layers.{i}.attn.o_proj" the output projection (input: concatenated head outputs (B, T, H*D))
    "layers.{i}.mlp"         its MLP
    "norm"                   the final norm before the LM head
    "lm_head"                the LM head
    "vision"                 the vision tower
    "model"                  the whole HF model
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from halluc.errors import HallucError


@dataclass(frozen=True)
class ImageSpan:
    """One image's tokens inside one row of a batch.

    `positions` are indices into the row (after left padding) of the tokens that carry this image,
    in the order the model reads them; `grid` is (rows, cols) with rows * cols == len(positions),
    so `positions.view(rows, cols)` lays the tokens out as the image. `kind` says which view of the
    image it is ("image", or for LLaVA-NeXT "base" and "tiles"; the tiles grid includes the
    per-row newline column).
    """

    positions: torch.Tensor  # (n,) long
    grid: tuple[int, int]
    kind: str = "image"


@dataclass(frozen=True)
class Adapter:
    """Module paths of one model family (dotted attribute paths from the HF model)."""

    family: str
    layers: str = "model.language_model.layers"
    final_norm: str = "model.language_model.norm"
    lm_head: str = "lm_head"
    vision_tower: str = "model.vision_tower"
    attn: str = "self_attn"
    o_proj: str = "o_proj"
    mlp: str = "mlp"
    text_config_key: str = "text_config"  # the sub-config whose attention is the LM's

    # ---- geometry -------------------------------------------------------------------------
    def text_config(self, model: nn.Module) -> Any:
        return getattr(model.config, self.text_config_key)

    def num_layers(self, model: nn.Module) -> int:
        return len(self.decoder_layers(model))

    def num_heads(self, model: nn.Module) -> int:
        return self.text_config(model).num_attention_heads

    def num_kv_heads(self, model: nn.Module) -> int:
        cfg = self.text_config(model)
        return getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads

    def head_dim(self, model: nn.Module) -> int:
        return self.attention(model, 0).head_dim

    def image_token_id(self, model: nn.Module) -> int:
        return model.config.image_token_id

    # ---- modules --------------------------------------------------------------------------
    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return _get(model, self.layers)

    def attention(self, model: nn.Module, layer: int) -> nn.Module:
        return _get(self.decoder_layers(model)[layer], self.attn)

    def resolve(self, model: nn.Module, point: str) -> nn.Module:
        """Module for a canonical hook point (see the module docstring); HallucError if unknown."""
        named = {"norm": self.final_norm, "lm_head": self.lm_head, "vision": self.vision_tower}
        if point == "model":
            return model
        if point in named:
            return _get(model, named[point])
        m = re.fullmatch(r"layers\.(-?\d+)(?:\.(attn|mlp)(?:\.(o_proj))?)?", point)
        if not m:
            raise HallucError(f"unknown hook point '{point}' for {self.family}")
        layers = self.decoder_layers(model)
        index = int(m.group(1))
        if not -len(layers) <= index < len(layers):
            raise HallucError(f"hook point '{point}': {self.family} has {len(layers)} layers")
        module = layers[index]
        if m.group(2) == "mlp":
            return _get(module, self.mlp)
        if m.group(2) == "attn":
            module = _get(module, self.attn)
            return _get(module, self.o_proj) if m.group(3) else module
        return module

    # ---- inputs ---------------------------------------------------------------------------
    def prompt(self, processor: Any, text: str, with_image: bool = True) -> str:
        """The family's chat prompt for one user turn, with or without the image placeholder."""
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
        messages = [{"role": "user", "content": content}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)

    def build_inputs(self, processor: Any, images: Sequence[Any] | None, prompts: Sequence[str]) -> dict:
        """A left-padded batch; `images=None` gives the text-only branch of the same prompts."""
        texts = [self.prompt(processor, p, with_image=images is not None) for p in prompts]
        processor.tokenizer.padding_side = "left"
        kwargs = {"images": list(images)} if images is not None else {}
        return dict(processor(text=texts, padding=True, return_tensors="pt", **kwargs))

    def image_mask(self, model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: which prompt positions carry image tokens."""
        return input_ids == self.image_token_id(model)

    def image_spans(self, model: nn.Module, inputs: dict) -> list[list[ImageSpan]]:
        """Per row, per image: positions and 2-D grid. Default: one square grid per image."""
        spans = []
        for row in self.image_mask(model, inputs["input_ids"]):
            positions = row.nonzero().flatten()
            side = int(round(len(positions) ** 0.5))
            if side * side != len(positions):
                raise NotImplementedError(f"{self.family}: {len(positions)} image tokens are not a square grid")
            spans.append([ImageSpan(positions, (side, side))] if len(positions) else [])
        return spans

    def vision_cls_attention(self, model: nn.Module, inputs: dict) -> torch.Tensor:
        """(B, n_image_tokens) attention of the vision CLS token to the patches the LM sees."""
        raise NotImplementedError(f"{self.family} has no vision CLS token attention")


def _get(root: nn.Module, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj
