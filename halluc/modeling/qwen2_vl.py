"""Qwen2-VL and Qwen2.5-VL: dynamic-resolution images, M-RoPE, merged 2x2 patch tokens.

Each image becomes `<|vision_start|>` + t*h*w / merge**2 `<|image_pad|>` tokens + `<|vision_end|>`,
where (t, h, w) is the image's row of `image_grid_thw` in patches (t == 1 for still images), so the
LM grid is (h / merge, w / merge) in row-major order. The model needs `mm_token_type_ids`
(0 text, 1 image) next to `image_grid_thw` to build its 3-D positions; the processor returns it.

Generation caches `model.model.rope_deltas` at prefill: never interleave two streams through one
model object (batch them instead).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import AutoProcessor, Qwen2_5_VLProcessor, Qwen2VLProcessor

from halluc.errors import HallucError
from halluc.modeling.base import Adapter, HFModel, ImageSpan, ModulePaths
from halluc.modeling.registry import Checkpoint, Family, register_family
from halluc.modeling.tiny import QWEN_SPECIALS, QWEN_TEMPLATE, TEXT, byte_tokenizer

# the processor expands these into image / video positions (Qwen2-VL, Qwen2.5-VL, Qwen3-VL)
QWEN_PLACEHOLDERS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """Qwen2VLProcessor without a video processor, so it builds without torchvision.

    transformers 5.23 requires the video processor attribute, and `Qwen2VLVideoProcessor` needs
    torchvision; images need neither. Everything else (placeholder expansion, mm_token_type_ids,
    chat template) is the stock processor's. `from_pretrained` loads a real checkpoint's image
    processor, tokenizer and chat template and ignores its video processor.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        # ProcessorMixin pairs positional sub-processors with the attributes named in *this*
        # signature, so the trailing video_processor=None is dropped instead of type-checked
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):
    """Qwen2_5_VLProcessor without a video processor (see `Qwen2VLImageOnlyProcessor`)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


@dataclass(frozen=True)
class QwenVLAdapter(Adapter):
    def build_inputs(self, processor, images, prompts, system: str | None = None, answers=None) -> dict:
        inputs = super().build_inputs(processor, images, prompts, system=system, answers=answers)
        # the stock processor returns it already; a processor built with return_mm_token_type_ids=False
        # would make generate() raise, so rebuild it from the ids rather than fail later
        if "mm_token_type_ids" not in inputs:
            image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
            inputs["mm_token_type_ids"] = (inputs["input_ids"] == image_id).int()
        return inputs

    def image_spans(self, model: HFModel, inputs: dict) -> list[list[ImageSpan]]:
        """One span per image with grid (h / merge, w / merge) from `image_grid_thw`."""
        merge = model.config.vision_config.spatial_merge_size
        grids = iter(inputs["image_grid_thw"].tolist() if "image_grid_thw" in inputs else [])
        spans = []
        for row in self.image_mask(model, inputs["input_ids"]):
            positions, row_spans, start = row.nonzero().flatten(), [], 0
            while start < len(positions):
                thw = next(grids, None)  # images are numbered across the batch in reading order
                if thw is None:
                    raise HallucError(f"{self.family}: more image tokens than image_grid_thw describes")
                rows, cols = thw[0] * thw[1] // merge, thw[2] // merge
                row_spans.append(ImageSpan(positions[start:start + rows * cols], (rows, cols)))
                start += rows * cols
            spans.append(row_spans)
        return spans


# Saved tiny models name these classes in processor_config.json, and AutoProcessor resolves a name
# only among stock classes and registered ones. A string key matches no config class, so this
# changes no model type's processor lookup.
for _cls in (Qwen2VLImageOnlyProcessor, Qwen2_5_VLImageOnlyProcessor):
    AutoProcessor.register(f"halluc:{_cls.__name__}", _cls)


QWEN_PATHS = ModulePaths(layers="model.language_model.layers", final_norm="model.language_model.norm",
                         lm_head="lm_head", vision_tower="model.visual")


def _qwen_processor(processor_class: type) -> Any:
    from transformers import Qwen2VLImageProcessorPil
    tok = byte_tokenizer(QWEN_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>")
    # patch 4, merge 2: one LM token per 8x8 pixels; 256..1024 pixels -> 4..16 image tokens
    image_processor = Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, temporal_patch_size=2,
                                               min_pixels=16 * 16, max_pixels=32 * 32)
    return processor_class(image_processor=image_processor, tokenizer=tok, chat_template=QWEN_TEMPLATE)


def _qwen_ids(tok: Any) -> dict[str, Any]:  # config keyword arguments (ids)
    ids = tok.convert_tokens_to_ids
    return dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))


def _qwen_text(tok: Any) -> dict[str, Any]:
    # M-RoPE: sum(mrope_section) == head_dim / 2 == 8
    rope = {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}
    # as in the real configs: bos is <|endoftext|> (the tokenizer adds none); instruct models stop on
    # <|im_end|> or <|endoftext|>
    endoftext = tok.convert_tokens_to_ids("<|endoftext|>")
    return dict(TEXT, vocab_size=len(tok), rope_parameters=rope, pad_token_id=endoftext, bos_token_id=endoftext,
                eos_token_id=[tok.eos_token_id, endoftext])


def tiny_qwen2_vl() -> tuple[Any, Any, type]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    processor = _qwen_processor(Qwen2VLImageOnlyProcessor)
    tok = processor.tokenizer
    vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen2VLConfig(text_config=_qwen_text(tok), vision_config=vision, **_qwen_ids(tok))
    return config, processor, Qwen2VLForConditionalGeneration


def tiny_qwen2_5_vl() -> tuple[Any, Any, type]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    processor = _qwen_processor(Qwen2_5_VLImageOnlyProcessor)
    tok = processor.tokenizer
    # window attention over 16-px windows (2x2 merged tokens); the last block attends globally
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=16, fullatt_block_indexes=[1])
    config = Qwen2_5_VLConfig(text_config=_qwen_text(tok), vision_config=vision, **_qwen_ids(tok))
    return config, processor, Qwen2_5_VLForConditionalGeneration


QWEN2_VL = register_family(Family(
    name="qwen2_vl", title="Qwen2-VL", model_types=("qwen2_vl",), model_class="Qwen2VLForConditionalGeneration",
    processor_class=Qwen2VLImageOnlyProcessor, adapter=QwenVLAdapter("qwen2_vl", QWEN_PATHS),
    tiny_name="tiny-qwen2-vl", build_tiny=tiny_qwen2_vl,
    checkpoints=(Checkpoint("qwen2-vl", "Qwen/Qwen2-VL-7B-Instruct", "Qwen2-VL-7B-Instruct"),),
    notes="grid from `image_grid_thw` / spatial merge; M-RoPE",
    placeholders=QWEN_PLACEHOLDERS))
QWEN2_5_VL = register_family(Family(
    name="qwen2_5_vl", title="Qwen2.5-VL", model_types=("qwen2_5_vl",),
    model_class="Qwen2_5_VLForConditionalGeneration", processor_class=Qwen2_5_VLImageOnlyProcessor,
    adapter=QwenVLAdapter("qwen2_5_vl", QWEN_PATHS), tiny_name="tiny-qwen2.5-vl", build_tiny=tiny_qwen2_5_vl,
    checkpoints=(Checkpoint("qwen2.5-vl", "Qwen/Qwen2.5-VL-7B-Instruct", "Qwen2.5-VL-7B-Instruct"),),
    notes="as Qwen2-VL",
    placeholders=QWEN_PLACEHOLDERS))
