"""Mistral 3 (Mistral Small 3.1 / 3.2, `Mistral3ForConditionalGeneration`): a Pixtral tower at the
image's own resolution, a 2x2 patch merger and a Mistral LM.

The image processor resizes each image (aspect ratio kept, longest edge at most `longest_edge`) to
multiples of the patch size; the LM reads one token per `spatial_merge_size` x `spatial_merge_size`
patches, so an image of (H, W) pixels (its `image_sizes` row) is a grid of
(H // (patch * merge), W // (patch * merge)) tokens in row-major order (the merger unfolds the patch
map block by block, row by row). The prompt writes the rows out with break tokens that are *not*
image tokens:

    [IMG] x cols [IMG_BREAK]   (every row but the last)
    [IMG] x cols [IMG_END]     (the last row)

so an image's span positions skip one token after each row: `positions.view(rows, cols)` is the image,
and the break tokens are text to every method (no image column, no grid cell).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import AutoProcessor
from transformers.processing_utils import ProcessorMixin

from halluc.errors import HallucError
from halluc.modeling.base import Adapter, HFModel, ImageSpan, ModulePaths, spans_by_image_size
from halluc.modeling.registry import Checkpoint, Family, register_family
from halluc.modeling.tiny import MISTRAL3_TEMPLATE, TEXT, VIT, byte_tokenizer, token_id

MISTRAL3_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]",
                     "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "<pad>"]


class PixtralImageOnlyProcessor(ProcessorMixin):
    """transformers' `PixtralProcessor` for images, importable without torchvision.

    The stock module imports the torchvision image processor at load time (for a token-count helper
    that generation never calls), so `PixtralProcessor` cannot even be imported here. This class is
    the same processor: the same arguments and attributes, the same image-token expansion (rows of
    `[IMG]` ending in `[IMG_BREAK]`, the last in `[IMG_END]`), on the PIL image processor.
    """

    text_kwargs = {"return_tensors": "pt"}
    images_kwargs = {"return_tensors": "pt"}

    def __init__(self, image_processor=None, tokenizer=None, patch_size: int = 16, spatial_merge_size: int = 1,
                 chat_template=None, image_token="[IMG]", image_break_token="[IMG_BREAK]", image_end_token="[IMG_END]",
                 **kwargs):
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.patch_size = patch_size
        self.spatial_merge_size = spatial_merge_size
        self.image_token, self.image_break_token, self.image_end_token = image_token, image_break_token, image_end_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.image_break_token_id = tokenizer.convert_tokens_to_ids(image_break_token)
        self.image_end_token_id = tokenizer.convert_tokens_to_ids(image_end_token)
        self.image_token_ids = [self.image_token_id, self.image_break_token_id, self.image_end_token_id]

    def _process_images(self, images, **images_kwargs):
        images_kwargs["patch_size"] = self.patch_size * self.spatial_merge_size  # resize to whole merged tokens
        return super()._process_images(images, **images_kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        step = self.patch_size * self.spatial_merge_size
        height, width = image_inputs["image_sizes"][image_idx]
        rows = [[self.image_token] * (width // step) + [self.image_break_token]] * (height // step)
        tokens = [token for row in rows for token in row]
        tokens[-1] = self.image_end_token
        return "".join(tokens)

    @property
    def model_input_names(self):
        return self.tokenizer.model_input_names + self.image_processor.model_input_names + ["image_sizes"]


# saved tiny models name this class in processor_config.json (see qwen2_vl.py)
AutoProcessor.register(f"halluc:{PixtralImageOnlyProcessor.__name__}", PixtralImageOnlyProcessor)


@dataclass(frozen=True)
class Mistral3Adapter(Adapter):
    def image_spans(self, model: HFModel, inputs: dict) -> list[list[ImageSpan]]:
        """One (rows, cols) span per image, from `image_sizes`; the positions skip the row-break tokens."""
        step = model.config.vision_config.patch_size * model.config.spatial_merge_size

        def spans(row: int, positions, size) -> list[ImageSpan]:
            rows, cols = size[0] // step, size[1] // step
            span = positions[:rows * cols]
            gaps = (span.view(rows, cols)[1:, 0] - span.view(rows, cols)[:-1, -1]).tolist() if rows > 1 else []
            if len(span) != rows * cols or any(gap != 2 for gap in gaps):  # one break token after each row
                raise HallucError(f"{self.family}: image tokens do not form the {rows}x{cols} grid of "
                                  f"image_sizes {size}")
            return [ImageSpan(span, (rows, cols))]

        return spans_by_image_size(self, model, inputs, spans)


def tiny_mistral3() -> tuple[Any, Any, type]:
    from transformers import (
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        MistralConfig,
        PixtralImageProcessorPil,
        PixtralVisionConfig,
    )
    tok = byte_tokenizer(MISTRAL3_SPECIALS, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")
    # 4-px patches merged 2x2: one LM token per 8x8 pixels; images at most 40 px on their longest edge
    image_processor = PixtralImageProcessorPil(size={"longest_edge": 40}, patch_size={"height": 4, "width": 4})
    processor = PixtralImageOnlyProcessor(image_processor=image_processor, tokenizer=tok, patch_size=4,
                                          spatial_merge_size=2, chat_template=MISTRAL3_TEMPLATE)
    vision = PixtralVisionConfig(**{**VIT, "image_size": 40, "patch_size": 4})  # head_dim 32 / 4 = 8
    text = MistralConfig(**TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, sliding_window=None)
    config = Mistral3Config(vision_config=vision, text_config=text, spatial_merge_size=2, vision_feature_layer=-1,
                            image_token_index=token_id(tok, "[IMG]"), tie_word_embeddings=False)
    return config, processor, Mistral3ForConditionalGeneration


MISTRAL3 = register_family(Family(
    name="mistral3", title="Mistral 3 (Pixtral vision)", model_types=("mistral3",),
    model_class="Mistral3ForConditionalGeneration", processor_class=PixtralImageOnlyProcessor,
    adapter=Mistral3Adapter("mistral3", ModulePaths(layers="model.language_model.layers",
                                                    final_norm="model.language_model.norm", lm_head="lm_head",
                                                    vision_tower="model.vision_tower")),
    tiny_name="tiny-mistral3", build_tiny=tiny_mistral3,
    checkpoints=(Checkpoint("mistral3", "mistralai/Mistral-Small-3.1-24B-Instruct-2503",
                            "Mistral Small 3.1 24B instruct"),),
    notes="one grid per image at its own aspect ratio; row-break tokens between the grid rows are text",
    placeholders=("[IMG]", "[IMG_BREAK]", "[IMG_END]")))
