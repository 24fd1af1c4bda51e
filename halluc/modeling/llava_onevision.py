"""LLaVA-OneVision: LLaVA-NeXT's any-resolution tiling on a SigLIP tower and a Qwen2 LM, capped at
`anyres_max_N` tiles' worth of tokens.

Per image (one image in its row), the LM reads:
  1. "base": the resized whole image's patches, a (side, side) grid (side = image_size / patch_size;
     SigLIP has no CLS token, strategy "full");
  2. "tiles": the tiles stitched into one feature map, the letterbox padding removed
     (`unpad_image`), then, when that map holds more than 1.1**2 * N tiles' worth of cells
     (`vision_aspect_ratio` "anyres_max_N"), bilinearly shrunk to (int(rows / r), int(cols / r))
     with r = sqrt(rows * cols / (N * side**2)); then one learned `image_newline` token after each
     row. Its grid is (rows, cols + 1): the last column is the newline column (as LLaVA-NeXT).
A row holding several images gets no tiles: each image is its base grid plus one newline token
(a (1, 1) span of kind "newline"). `image_sizes` and `batch_num_images` come from the processor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoProcessor, LlavaOnevisionProcessor
from transformers.models.llava_onevision.modeling_llava_onevision import get_anyres_image_grid_shape, unpad_image

from halluc.modeling.base import Adapter, HFModel, ImageSpan, grid_spans, spans_by_image_size
from halluc.modeling.llava import LLAVA_PATHS
from halluc.modeling.registry import Checkpoint, Family, register_family
from halluc.modeling.tiny import ONEVISION_TEMPLATE, QWEN_SPECIALS, TEXT, VIT, byte_tokenizer, token_id


class LlavaOnevisionImageOnlyProcessor(LlavaOnevisionProcessor):
    """LlavaOnevisionProcessor without a video processor (its video processor needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None, vision_feature_select_strategy=None,
                 chat_template=None, image_token="<image>", video_token="<video>", vision_aspect_ratio="anyres_max_9",
                 **kwargs):
        # every setting by name: ProcessorMixin saves (and reloads) the ones this signature names
        super().__init__(image_processor, tokenizer, None, num_image_tokens=num_image_tokens,
                         vision_feature_select_strategy=vision_feature_select_strategy, chat_template=chat_template,
                         image_token=image_token, video_token=video_token, vision_aspect_ratio=vision_aspect_ratio,
                         **kwargs)


AutoProcessor.register(f"halluc:{LlavaOnevisionImageOnlyProcessor.__name__}", LlavaOnevisionImageOnlyProcessor)


@dataclass(frozen=True)
class LlavaOnevisionAdapter(Adapter):
    def image_spans(self, model: HFModel, inputs: dict) -> list[list[ImageSpan]]:
        """Per image a "base" span (side, side), then a "tiles" span (rows, cols + 1) with newlines
        (or, in a row with several images, a (1, 1) "newline" span)."""
        per_row = inputs.get("batch_num_images")
        per_row = [int(n) for n in per_row] if per_row is not None else None

        def spans(row: int, positions, size) -> list[ImageSpan]:
            base, tiles = image_grids(model.config, size)
            if per_row is None or per_row[row] == 1:  # the model tiles only single-image rows
                return grid_spans(positions, (("base", base), ("tiles", tiles)))
            return grid_spans(positions, (("base", base), ("newline", (1, 1))))

        return spans_by_image_size(self, model, inputs, spans)


def image_grids(config, image_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((side, side), (rows, cols + 1)): base and tiles grids for an image of (H, W) pixels."""
    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    tiles_h, tiles_w = get_anyres_image_grid_shape(list(image_size), config.image_grid_pinpoints, vision.image_size)
    # the model's arithmetic: unpad an empty (0, H, W) map of the stitched tiles, then cap it at N tiles
    _, rows, cols = unpad_image(torch.empty(0, tiles_h * side, tiles_w * side), list(image_size)).shape
    max_tiles = int(config.vision_aspect_ratio.strip("anyres_max_"))
    ratio = math.sqrt(rows * cols / (max_tiles * side ** 2))
    if ratio > 1.1:
        rows, cols = int(rows // ratio), int(cols // ratio)
    return (side, side), (rows, cols + 1)


def tiny_llava_onevision() -> tuple[Any, Any, type]:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        Qwen2Config,
        SiglipVisionConfig,
    )
    tok = byte_tokenizer([*QWEN_SPECIALS[:3], "<image>", "<video>"], eos="<|im_end|>", pad="<|endoftext|>",
                         extra={"image_token": "<image>", "video_token": "<video>"})
    # the real pinpoints are 1x1..6x6 multiples of the 384-px tile; ours 1x1..3x3 of the 28-px one, capped at
    # anyres_max_4 (the real cap is 9 of 36), so large images take the shrinking path too
    pinpoints = [[28 * h, 28 * w] for h in range(1, 4) for w in range(1, 4)]
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28}, image_grid_pinpoints=pinpoints)
    processor = LlavaOnevisionImageOnlyProcessor(
        image_processor=image_processor, tokenizer=tok, num_image_tokens=16, vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_4", chat_template=ONEVISION_TEMPLATE)
    endoftext = token_id(tok, "<|endoftext|>")
    text = Qwen2Config(**TEXT, vocab_size=len(tok), pad_token_id=endoftext, bos_token_id=endoftext,
                       eos_token_id=tok.eos_token_id)
    config = LlavaOnevisionConfig(vision_config=SiglipVisionConfig(**VIT), text_config=text,
                                  image_token_index=tok.image_token_id, video_token_index=tok.video_token_id,
                                  image_grid_pinpoints=pinpoints, vision_feature_layer=-1,
                                  vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_4",
                                  tie_word_embeddings=False)
    return config, processor, LlavaOnevisionForConditionalGeneration


LLAVA_ONEVISION = register_family(Family(
    name="llava_onevision", title="LLaVA-OneVision", model_types=("llava_onevision",),
    model_class="LlavaOnevisionForConditionalGeneration", processor_class=LlavaOnevisionImageOnlyProcessor,
    adapter=LlavaOnevisionAdapter("llava_onevision", LLAVA_PATHS), tiny_name="tiny-llava-onevision",
    build_tiny=tiny_llava_onevision,
    checkpoints=(Checkpoint("llava-onevision", "llava-hf/llava-onevision-qwen2-7b-ov-hf",
                            "LLaVA-OneVision Qwen2-7B (OV stage)"),),
    notes="base grid, then the anyres tiles grid (shrunk to anyres_max_9, with the newline column); SigLIP, no CLS",
    placeholders=("<image>", "<video>")))
