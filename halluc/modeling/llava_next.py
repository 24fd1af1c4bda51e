"""LLaVA-NeXT (LLaVA-1.6): any-resolution tiling on top of LLaVA-1.5's CLIP + projector + LM.

The image processor picks the best `image_grid_pinpoints` resolution for the image, cuts it into
tiles of the ViT's size and prepends a resized copy of the whole image (the "base" crop, index 0
of `pixel_values[i]`). The LM then reads, per image:
  1. "base": the base crop's patches, a (side, side) grid (side = image_size / patch_size);
  2. "tiles": the tiles' patches stitched into one feature map, with the rows and columns that
     only hold the letterbox padding removed (`unpad_image`), and one learned `image_newline`
     token after each row. Its grid is (rows, cols + 1): the last column is the newline column.
Both need `image_sizes` (original (H, W) per image), which the processor returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

from halluc.errors import MethodRefused
from halluc.modeling.base import Adapter, HFModel, ImageSpan, grid_spans, spans_by_image_size
from halluc.modeling.llava import LLAVA_PATHS, clip_cls_attention, per_row
from halluc.modeling.registry import Checkpoint, Family, register_family
from halluc.modeling.tiny import LLAVA_TEMPLATE, VIT, llama_text, llama_tokenizer


@dataclass(frozen=True)
class LlavaNextAdapter(Adapter):
    def image_spans(self, model: HFModel, inputs: dict) -> list[list[ImageSpan]]:
        """Per image a "base" span (side, side), then a "tiles" span (rows, cols + 1) with newlines."""
        return spans_by_image_size(self, model, inputs, lambda row, positions, size: grid_spans(
            positions, zip(("base", "tiles"), image_grids(model.config, size))))

    def vision_cls_attention(self, model: HFModel, inputs: dict, merged_heads: bool = False) -> torch.Tensor:
        """(B, n_base_tokens): CLS attention over the base crop's patches, aligned with the
        "base" spans; the tiles (each with its own CLS) are not covered."""
        pixel_values = inputs["pixel_values"]  # (N_img, crops, 3, S, S), base crop first
        cls = clip_cls_attention(model, self.resolve(model, "vision"), pixel_values[:, 0], merged_heads)  # (N_img, P)
        images_per_row = [sum(s.kind == "base" for s in row) for row in self.image_spans(model, inputs)]
        return per_row(cls, images_per_row)


def image_grids(config, image_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((side, side), (rows, cols + 1)): base and tiles grids for an image of (H, W) pixels."""
    if config.vision_feature_select_strategy != "default":
        raise MethodRefused("LLaVA-NeXT grids with the CLS token kept (strategy 'full')")
    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    tiles_h, tiles_w = get_anyres_image_grid_shape(list(image_size), config.image_grid_pinpoints, vision.image_size)
    # same arithmetic as the model: unpad an empty (0, H, W) feature map of the stitched tiles
    _, rows, cols = unpad_image(torch.empty(0, tiles_h * side, tiles_w * side), list(image_size)).shape
    return (side, side), (rows, cols + 1)


def tiny_llava_next() -> tuple[Any, Any, type]:
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )
    tok = llama_tokenizer()
    # the real pinpoints are multiples of the 336-px tile; ours of the 28-px one (1x2, 2x1, 2x2, 3x1, 1x3 tiles)
    pinpoints = [[28, 56], [56, 28], [56, 56], [84, 28], [28, 84]]
    config = LlavaNextConfig(vision_config=CLIPVisionConfig(**VIT, projection_dim=32), text_config=llama_text(tok),
                             image_token_index=tok.image_token_id, image_grid_pinpoints=pinpoints,
                             vision_feature_layer=-2, vision_feature_select_strategy="default")
    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                                 image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tok, patch_size=7,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=LLAVA_TEMPLATE)
    return config, processor, LlavaNextForConditionalGeneration


LLAVA_NEXT = register_family(Family(
    name="llava_next", title="LLaVA-NeXT", model_types=("llava_next",),
    model_class="LlavaNextForConditionalGeneration", processor_class="LlavaNextProcessor",
    adapter=LlavaNextAdapter("llava_next", LLAVA_PATHS, provides=frozenset({"grid", "vision_cls", "pre_norm_block"})),
    tiny_name="tiny-llava-next", build_tiny=tiny_llava_next,
    checkpoints=(Checkpoint("llava-next", "llava-hf/llava-v1.6-vicuna-7b-hf", "LLaVA-NeXT (1.6) Vicuna-7B"),),
    notes="two spans per image: base grid and tiles grid (with the newline column)",
    placeholders=("<image>",)))
