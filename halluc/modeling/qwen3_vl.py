"""Qwen3-VL: Qwen2-VL's image tokens and M-RoPE, plus DeepStack visual features.

Image tokens are laid out as in Qwen2-VL (`<|vision_start|>` + t*h*w / merge**2 `<|image_pad|>` +
`<|vision_end|>`, grid (h / merge, w / merge) from `image_grid_thw`), so the adapter is Qwen2-VL's.
What differs inside the model:
  - M-RoPE is interleaved (`mrope_interleaved`) and the vision tower has learned position
    embeddings resampled to each image's grid; neither changes which positions carry the image.
  - DeepStack: features of early vision layers (`deepstack_visual_indexes`) are *added* to the
    residual stream at the image positions right after decoder layers 0..k-1. A forward hook on
    `layers.{i}` therefore sees layer i's output before that addition; pre-hooks on `layers.{i+1}`
    see it after. Text-only inputs carry no DeepStack features.
The instruct template has no default system turn.
"""
from __future__ import annotations

from typing import Any

from transformers import AutoProcessor, Qwen3VLProcessor

from halluc.modeling.qwen2_vl import QWEN_PATHS, QWEN_PLACEHOLDERS, QwenVLAdapter, _qwen_ids, _qwen_text
from halluc.modeling.registry import Checkpoint, Family, register_family
from halluc.modeling.tiny import QWEN3_TEMPLATE, QWEN_SPECIALS, byte_tokenizer


class Qwen3VLImageOnlyProcessor(Qwen3VLProcessor):
    """Qwen3VLProcessor without a video processor (see `qwen2_vl.Qwen2VLImageOnlyProcessor`)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


AutoProcessor.register(f"halluc:{Qwen3VLImageOnlyProcessor.__name__}", Qwen3VLImageOnlyProcessor)


def tiny_qwen3_vl() -> tuple[Any, Any, type]:
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLConfig, Qwen3VLForConditionalGeneration
    tok = byte_tokenizer(QWEN_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>")
    # patch 4, merge 2: one LM token per 8x8 pixels; 256..1024 pixels -> 4..16 image tokens
    image_processor = Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, temporal_patch_size=2,
                                               min_pixels=16 * 16, max_pixels=32 * 32)
    processor = Qwen3VLImageOnlyProcessor(image_processor=image_processor, tokenizer=tok, chat_template=QWEN3_TEMPLATE)
    text = _qwen_text(tok)
    text["rope_parameters"] = {**text["rope_parameters"], "mrope_interleaved": True}
    # DeepStack from vision block 0 into decoder layer 0; a 4x4 grid of learned vision positions
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16, deepstack_visual_indexes=[0])
    config = Qwen3VLConfig(text_config={**text, "head_dim": 16}, vision_config=vision, **_qwen_ids(tok))
    return config, processor, Qwen3VLForConditionalGeneration


QWEN3_VL = register_family(Family(
    name="qwen3_vl", title="Qwen3-VL", model_types=("qwen3_vl",), model_class="Qwen3VLForConditionalGeneration",
    processor_class=Qwen3VLImageOnlyProcessor, adapter=QwenVLAdapter("qwen3_vl", QWEN_PATHS),
    tiny_name="tiny-qwen3-vl", build_tiny=tiny_qwen3_vl,
    checkpoints=(Checkpoint("qwen3-vl", "Qwen/Qwen3-VL-8B-Instruct", "Qwen3-VL-8B-Instruct"),
                 Checkpoint("qwen3-vl-4b", "Qwen/Qwen3-VL-4B-Instruct", "Qwen3-VL-4B-Instruct")),
    notes="as Qwen2-VL (grid from `image_grid_thw`); interleaved M-RoPE; DeepStack features added after early layers",
    placeholders=QWEN_PLACEHOLDERS))
