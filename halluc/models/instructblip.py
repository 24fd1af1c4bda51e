"""InstructBLIP: a BLIP ViT, a Q-Former that reads the image and the instruction, and a Vicuna/T5 LM.

The LM sees `num_query_tokens` (32) Q-Former query outputs, not image patches: they have no 2-D
layout, so `image_spans` gives one (1, n) grid of kind "queries". The prompt is the raw
instruction (no chat template); the Q-Former also reads it, through its own tokenizer
(`qformer_input_ids`). Only decoder-only LMs (Vicuna) are supported: the paths below are
`LlamaForCausalLM`'s, under `model.language_model`.

Batch layout: InstructBlipProcessor puts the query placeholders before the left padding,
`[<image> x n][pad ...][<s> prompt]`; `build_inputs` moves the padding to the front,
`[pad ...][<image> x n][<s> prompt]`, so every row is its unpadded self shifted right. (With the
padding in the middle, a plain forward, which numbers positions 0..T-1, would see a gap between
the queries and the prompt that the unpadded row does not have.)

Text-only inputs (`images=None`) carry no Q-Former inputs and no pixels: the conditional model
cannot run without an image, so feed them to `language_model(model)`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from halluc.models.base import Adapter, ImageSpan


@dataclass(frozen=True)
class InstructBlipAdapter(Adapter):
    layers: str = "language_model.model.layers"
    final_norm: str = "language_model.model.norm"
    lm_head: str = "language_model.lm_head"
    vision_tower: str = "vision_model"

    def prompt(self, processor: Any, text: str, with_image: bool = True) -> str:
        return text  # the processor prepends the query placeholders when images are given

    def build_inputs(self, processor: Any, images: Sequence[Any] | None, prompts: Sequence[str]) -> dict:
        inputs = super().build_inputs(processor, images, prompts)
        if images is None:
            return {k: v for k, v in inputs.items() if not k.startswith("qformer_")}
        order = inputs["attention_mask"].argsort(dim=1, stable=True)  # (B, T): pads first, order kept
        for key in ("input_ids", "attention_mask"):
            inputs[key] = inputs[key].gather(1, order)
        # The processor pads the Q-Former prompt on the LM tokenizer's side (left), which shifts the
        # Q-Former's absolute positions: a padded row would then differ from the same row alone.
        qformer = processor.qformer_tokenizer(list(prompts), padding=True, padding_side="right", return_tensors="pt")
        inputs["qformer_input_ids"], inputs["qformer_attention_mask"] = qformer["input_ids"], qformer["attention_mask"]
        return inputs

    def image_spans(self, model: nn.Module, inputs: dict) -> list[list[ImageSpan]]:
        """One (1, num_query_tokens) span of kind "queries" per image."""
        n = model.config.num_query_tokens
        return [[ImageSpan(p, (1, n), "queries") for p in row.nonzero().flatten().split(n)] if row.any() else []
                for row in self.image_mask(model, inputs["input_ids"])]

    def language_model(self, model: nn.Module) -> nn.Module:
        """The causal LM alone: what runs text-only inputs."""
        return model.language_model


INSTRUCTBLIP = InstructBlipAdapter("instructblip")
