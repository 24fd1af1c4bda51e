"""LLaVA-1.5: a CLIP ViT, a 2-layer MLP projector and a Llama/Vicuna LM.

Each image becomes `image_seq_length` placeholder tokens (576 = 24x24 at 336 px / 14 px patches),
the patch features of vision layer `vision_feature_layer` (-2) with the CLS token dropped
(`vision_feature_select_strategy="default"`), in row-major order: one square grid per image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from halluc.errors import HallucError, MethodRefused
from halluc.images import distinct_rows
from halluc.modeling.base import Adapter, HFModel, ImageSpan, ModulePaths
from halluc.modeling.registry import Checkpoint, Family, register_family
from halluc.modeling.tiny import LLAVA_TEMPLATE, VIT, llama_text, llama_tokenizer


@dataclass(frozen=True)
class LlavaAdapter(Adapter):
    def image_spans(self, model: HFModel, inputs: dict) -> list[list[ImageSpan]]:
        """One square (side, side) grid per image; several images in a row follow each other."""
        side = _patches_per_side(model.config)
        spans = []
        for row in self.image_mask(model, inputs["input_ids"]):
            positions = row.nonzero().flatten()
            if len(positions) % (side * side):
                raise HallucError(f"{self.family}: {len(positions)} image tokens are not whole {side}x{side} grids")
            spans.append([ImageSpan(p, (side, side)) for p in positions.split(side * side)] if len(positions) else [])
        return spans

    def vision_cls_attention(self, model: HFModel, inputs: dict, merged_heads: bool = False) -> torch.Tensor:
        """(B, n_image_tokens): CLS attention over the patches each row's image tokens carry."""
        tower = self.resolve(model, "vision")
        cls = clip_cls_attention(model, tower, inputs["pixel_values"], merged_heads)  # (N_img, P)
        return per_row(cls, [len(s) for s in self.image_spans(model, inputs)])


def clip_cls_attention(model: HFModel, tower: HFModel, pixel_values: torch.Tensor,
                       merged_heads: bool = False) -> torch.Tensor:
    """(N, P) attention of the CLS query to the P patches, in the vision layer whose output LLaVA
    feeds to the LM (`vision_feature_layer`); the CLS column is dropped. Head-averaged, or with
    `merged_heads` one softmax of q·kᵀ/√C over the full width C (all heads at once), as DAMRO's code.

    The tower keeps its own attention backend: a pre-hook takes the normed input of that layer's
    attention and the probabilities are recomputed from its q/k projections. Each row sums to
    1 minus the CLS self-attention, so to at most 1.
    """
    if model.config.vision_feature_select_strategy != "default":
        raise MethodRefused("vision CLS attention needs a tower with a CLS token (strategy 'default')")
    vision = tower.vision_model if hasattr(tower, "vision_model") else tower  # transformers 5 dropped that level
    encoder: HFModel = vision.encoder
    layers = encoder.layers
    attn = layers[_feature_layer_index(model.config.vision_feature_layer, len(layers))].self_attn
    seen = []
    handle = attn.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]),
        with_kwargs=True)
    distinct, inverse = distinct_rows(pixel_values)  # a batch asking about one image several times: one pass
    try:
        with torch.no_grad():
            tower(pixel_values=distinct.to(tower.device, tower.dtype))
    finally:
        handle.remove()
    with torch.no_grad():
        probs = _merged_cls_probs(attn, seen[0]) if merged_heads else _cls_probs(attn, seen[0]).mean(1)
        return probs[inverse.to(probs.device), 1:]


def _cls_probs(attn: HFModel, hidden: torch.Tensor) -> torch.Tensor:
    """(N, H, T) softmax of the CLS query against all T keys, in float32."""
    n, t, _ = hidden.shape
    q = attn.q_proj(hidden[:, :1]).float().view(n, 1, attn.num_heads, attn.head_dim).transpose(1, 2)  # (N, H, 1, D)
    k = attn.k_proj(hidden).float().view(n, t, attn.num_heads, attn.head_dim).transpose(1, 2)  # (N, H, T, D)
    return (q @ k.transpose(-1, -2) * attn.scale).softmax(-1)[:, :, 0]  # (N, H, T)


def _merged_cls_probs(attn: HFModel, hidden: torch.Tensor) -> torch.Tensor:
    """(N, T) softmax of the CLS query's projection against every key projection at full width C
    (the q_proj / k_proj outputs, before any per-head split or scaling), scaled by C^-1/2."""
    q = attn.q_proj(hidden[:, :1]).float()  # (N, 1, C)
    k = attn.k_proj(hidden).float()  # (N, T, C)
    return (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)[:, 0]  # (N, T)


def _feature_layer_index(feature_layer: int | list[int], num_layers: int) -> int:
    """The encoder layer whose output is `hidden_states[feature_layer]` (entry 0 is the embeddings)."""
    if not isinstance(feature_layer, int):
        raise MethodRefused(f"vision CLS attention for several feature layers {feature_layer}")
    index = feature_layer + num_layers if feature_layer < 0 else feature_layer - 1
    if not 0 <= index < num_layers:
        raise HallucError(f"vision_feature_layer {feature_layer} selects no encoder layer")
    return index


def _patches_per_side(config) -> int:
    return config.vision_config.image_size // config.vision_config.patch_size


def per_row(per_image: torch.Tensor, images_per_row: list[int]) -> torch.Tensor:
    """(N_img, P) -> (B, k*P): each row's images side by side; rows must hold equally many."""
    if len(set(images_per_row)) != 1:
        raise HallucError(f"vision CLS attention needs the same number of images per row, got {images_per_row}")
    return per_image.reshape(len(images_per_row), -1)


# the LM inside LlavaForConditionalGeneration (transformers 5: model.language_model is the decoder)
LLAVA_PATHS = ModulePaths(layers="model.language_model.layers", final_norm="model.language_model.norm",
                          lm_head="lm_head", vision_tower="model.vision_tower", projector="model.multi_modal_projector")


def tiny_llava() -> tuple[Any, Any, type]:
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    tok = llama_tokenizer()
    config = LlavaConfig(vision_config=CLIPVisionConfig(**VIT, projection_dim=32), text_config=llama_text(tok),
                         image_token_index=tok.image_token_id, image_seq_length=16, vision_feature_layer=-2,
                         vision_feature_select_strategy="default")
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    # num_additional_image_tokens=1 counts the CLS that "default" then drops: 16 placeholders
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=7,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_TEMPLATE)
    return config, processor, LlavaForConditionalGeneration


LLAVA = register_family(Family(
    name="llava", title="LLaVA-1.5", model_types=("llava",), model_class="LlavaForConditionalGeneration",
    processor_class="LlavaProcessor",
    adapter=LlavaAdapter("llava", LLAVA_PATHS, provides=frozenset({"grid", "vision_cls", "pre_norm_block"})),
    tiny_name="tiny-llava", build_tiny=tiny_llava,
    checkpoints=(Checkpoint("llava", "llava-hf/llava-1.5-7b-hf", "LLaVA-1.5-7B, the field's reference model"),
                 Checkpoint("llava-13b", "llava-hf/llava-1.5-13b-hf", "LLaVA-1.5-13B")),
    notes="one square image grid; CLIP CLS attention for DAMRO",
    placeholders=("<image>",)))
