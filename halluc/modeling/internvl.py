"""InternVL 3 / 3.5 in HF format (`InternVLForConditionalGeneration`, the "-hf" checkpoints).

The image processor (GotOcr2's, `crop_to_patches=True`) cuts each image into 1..`max_patches`
square tiles of the ViT's size, on the tile layout closest to the image's aspect ratio, and, when
there is more than one tile, appends a thumbnail (the whole image resized to one tile). Each tile
becomes `image_seq_length` tokens: the ViT's patch features (CLS dropped, strategy "default"),
pixel-shuffled 2x2 -> 1 (`downsample_ratio` 0.5), so a (side, side) grid per tile in row-major order
(`pixel_shuffle` keeps rows first: token (i, j) merges patches 2i..2i+1 x 2j..2j+1).

In the prompt an image is `<img>` + tiles * image_seq_length `<IMG_CONTEXT>` + `</img>`: one
contiguous run of image tokens per image. The number of tiles is not in the model inputs (the
processor drops `num_patches`), but every tile has the same size, so a run of k * image_seq_length
tokens is k tiles in processor order: the k - 1 crops ("tile", row-major over the layout) and the
thumbnail last ("image", the whole image). A single-tile image is one "image" span. Each span has
its own (side, side) grid; the tiles are not stitched into one grid (the layout is not in the inputs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import AutoProcessor, InternVLProcessor

from halluc.errors import HallucError
from halluc.modeling.base import Adapter, HFModel, ImageSpan, ModulePaths, contiguous_runs, square_side
from halluc.modeling.registry import Checkpoint, Family, register_family
from halluc.modeling.tiny import INTERNVL_TEMPLATE, QWEN_SPECIALS, TEXT, byte_tokenizer, token_id


class InternVLImageOnlyProcessor(InternVLProcessor):
    """InternVLProcessor without a video processor (its video processor needs torchvision; images do not)."""

    def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None,
                 **kwargs):
        super().__init__(image_processor, tokenizer, None, image_seq_length=image_seq_length,
                         chat_template=chat_template, **kwargs)


AutoProcessor.register(f"halluc:{InternVLImageOnlyProcessor.__name__}", InternVLImageOnlyProcessor)


@dataclass(frozen=True)
class InternVLAdapter(Adapter):
    def image_spans(self, model: HFModel, inputs: dict) -> list[list[ImageSpan]]:
        """Per image, one (side, side) span per tile: crops ("tile") first, the thumbnail ("image") last."""
        per_tile = tokens_per_tile(model.config)
        side = square_side(per_tile, self.family)
        spans = []
        for row in self.image_mask(model, inputs["input_ids"]):
            row_spans = []
            for run in contiguous_runs(row.nonzero().flatten()):  # one run per image
                if len(run) % per_tile:
                    raise HallucError(f"{self.family}: {len(run)} image tokens are not whole tiles of {per_tile}")
                tiles = run.split(per_tile)
                kinds = ["tile"] * (len(tiles) - 1) + ["image"]
                row_spans += [ImageSpan(t, (side, side), kind) for t, kind in zip(tiles, kinds)]
            spans.append(row_spans)
        return spans


def tokens_per_tile(config) -> int:
    """LM tokens per tile: the ViT's (image_size / patch_size)**2 patches, pixel-shuffled by downsample_ratio."""
    vision = config.vision_config
    size, patch = _pair(vision.image_size), _pair(vision.patch_size)
    patches = (size[0] // patch[0]) * (size[1] // patch[1])
    return int(patches * config.downsample_ratio ** 2)


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


INTERNVL_PATHS = ModulePaths(layers="model.language_model.layers", final_norm="model.language_model.norm",
                             lm_head="lm_head", vision_tower="model.vision_tower")


def tiny_internvl() -> tuple[Any, Any, type]:
    from transformers import (
        GotOcr2ImageProcessorPil,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLVisionConfig,
        Qwen2Config,
    )
    specials = [*QWEN_SPECIALS[:3], "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    tok = byte_tokenizer(specials, eos="<|im_end|>", pad="<|endoftext|>",
                         extra={"start_image_token": "<img>", "end_image_token": "</img>",
                                "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    # 56-px tiles of 7-px patches: 8x8 patches -> 4x4 = 16 tokens per tile; up to 4 tiles + the thumbnail
    image_processor = GotOcr2ImageProcessorPil(size={"height": 56, "width": 56}, crop_to_patches=True, min_patches=1,
                                               max_patches=4)
    processor = InternVLImageOnlyProcessor(image_processor=image_processor, tokenizer=tok, image_seq_length=16,
                                           chat_template=INTERNVL_TEMPLATE)
    vision = InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  image_size=56, patch_size=7)
    endoftext = token_id(tok, "<|endoftext|>")
    text = Qwen2Config(**TEXT, vocab_size=len(tok), pad_token_id=endoftext, bos_token_id=endoftext,
                       eos_token_id=tok.eos_token_id)
    config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=token_id(
        tok, "<IMG_CONTEXT>"), image_seq_length=16, downsample_ratio=0.5, vision_feature_layer=-1,
        vision_feature_select_strategy="default", tie_word_embeddings=False)
    return config, processor, InternVLForConditionalGeneration


INTERNVL = register_family(Family(
    name="internvl", title="InternVL 3 / 3.5 (HF)", model_types=("internvl",),
    model_class="InternVLForConditionalGeneration", processor_class=InternVLImageOnlyProcessor,
    adapter=InternVLAdapter("internvl", INTERNVL_PATHS), tiny_name="tiny-internvl", build_tiny=tiny_internvl,
    checkpoints=(Checkpoint("internvl3", "OpenGVLab/InternVL3-8B-hf", "InternVL3-8B (HF format)"),
                 Checkpoint("internvl3.5", "OpenGVLab/InternVL3_5-8B-HF", "InternVL3.5-8B (HF format)")),
    notes="one (side, side) grid per tile: crops, then the thumbnail (the whole image)",
    placeholders=("<IMG_CONTEXT>", "<img>", "</img>", "<video>")))
