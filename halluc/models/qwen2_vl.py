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

from torch import nn
from transformers import AutoProcessor, Qwen2_5_VLProcessor, Qwen2VLProcessor

from halluc.errors import HallucError
from halluc.models.base import Adapter, ImageSpan


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
    vision_tower: str = "model.visual"

    def build_inputs(self, processor, images, prompts) -> dict:
        inputs = super().build_inputs(processor, images, prompts)
        # the stock processor returns it already; a processor built with return_mm_token_type_ids=False
        # would make generate() raise, so rebuild it from the ids rather than fail later
        if "mm_token_type_ids" not in inputs:
            image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
            inputs["mm_token_type_ids"] = (inputs["input_ids"] == image_id).int()
        return inputs

    def image_spans(self, model: nn.Module, inputs: dict) -> list[list[ImageSpan]]:
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


QWEN2_VL = QwenVLAdapter("qwen2_vl")
QWEN2_5_VL = QwenVLAdapter("qwen2_5_vl")
