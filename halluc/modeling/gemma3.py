"""Gemma 3 (`Gemma3ForConditionalGeneration`): a SigLIP tower, average-pooled to `mm_tokens_per_image`
(256 = 16x16) soft tokens per image, and a Gemma 3 LM with sliding-window and global layers.

Per image the prompt holds `\\n\\n<start_of_image>` + 256 `<image_soft_token>` + `<end_of_image>\\n\\n`:
one contiguous run, a (16, 16) grid in row-major order (the 64x64 patch map pooled 4x4 -> 1, then
flattened row by row). With pan & scan on (off by default) every crop is one more such run.

What the methods meet inside the LM:
  - the image block attends bidirectionally (the processor's `token_type_ids` mark it; the model
    builds the mask), so the mask is not causal & padding: attention edits run on the torch
    reference (the Triton kernel refuses such masks), and a left-padded row still equals itself alone;
  - sliding-window layers (5 of every 6) keep only the last `sliding_window` - 1 keys in their cache
    once the sequence is longer; the halluc backend restores the evicted positions (as masked keys)
    so image columns stay aligned (`AttentionEdit.evicted_keys`, set by `attach`);
  - the chat template writes `<bos>` itself (the adapter then tokenizes without a second one) and
    folds a system prompt into the first user turn.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from halluc.modeling.base import Adapter, HFModel, ImageSpan, ModulePaths, contiguous_runs, square_side
from halluc.modeling.registry import Checkpoint, Family, register_family
from halluc.modeling.tiny import GEMMA3_TEMPLATE, TEXT, VIT, byte_tokenizer, token_id

GEMMA3_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                   "<end_of_image>", "<image_soft_token>"]


@dataclass(frozen=True)
class Gemma3Adapter(Adapter):
    def image_spans(self, model: HFModel, inputs: dict) -> list[list[ImageSpan]]:
        """One (side, side) span per image (each image is one run of mm_tokens_per_image tokens)."""
        side = square_side(model.config.mm_tokens_per_image, self.family)
        spans = []
        for row in self.image_mask(model, inputs["input_ids"]):
            runs = [p for run in contiguous_runs(row.nonzero().flatten()) for p in run.split(side * side)]
            spans.append([ImageSpan(p, (side, side)) for p in runs])
        return spans


def tiny_gemma3() -> tuple[Any, Any, type]:
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )
    tok = byte_tokenizer(GEMMA3_SPECIALS, bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>",
                         extra={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                "image_token": "<image_soft_token>"})
    # 32-px images, 4-px patches: 8x8 patches pooled 2x2 -> 16 soft tokens (4x4)
    image_processor = Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tok, image_seq_length=16,
                                chat_template=GEMMA3_TEMPLATE)
    ids = partial(token_id, tok)
    # one sliding-window layer (window 24, shorter than the prompts, so decoding evicts keys) and one global
    text = Gemma3TextConfig(**{**TEXT, "max_position_embeddings": 512}, head_dim=16, query_pre_attn_scalar=16,
                            sliding_window=24, layer_types=["sliding_attention", "full_attention"],
                            vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                            eos_token_id=[tok.eos_token_id, ids("<end_of_turn>")], tie_word_embeddings=True)
    vision = SiglipVisionConfig(**{**VIT, "image_size": 32, "patch_size": 4})
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=16,
                          boi_token_index=ids("<start_of_image>"), eoi_token_index=ids("<end_of_image>"),
                          image_token_index=ids("<image_soft_token>"))
    return config, processor, Gemma3ForConditionalGeneration


GEMMA3 = register_family(Family(
    name="gemma3", title="Gemma 3", model_types=("gemma3",), model_class="Gemma3ForConditionalGeneration",
    processor_class="Gemma3Processor",
    adapter=Gemma3Adapter("gemma3", ModulePaths(layers="model.language_model.layers",
                                                final_norm="model.language_model.norm", lm_head="lm_head",
                                                vision_tower="model.vision_tower"),
                          nested_images=True, provides=frozenset({"grid"})),  # sandwich norms: no pre-norm block
    tiny_random=("model.multi_modal_projector.mm_input_projection_weight",),
    tiny_name="tiny-gemma3", build_tiny=tiny_gemma3,
    checkpoints=(Checkpoint("gemma3", "google/gemma-3-4b-it", "Gemma 3 4B instruct (gated on the hub)"),
                 Checkpoint("gemma3-12b", "google/gemma-3-12b-it", "Gemma 3 12B instruct (gated on the hub)")),
    notes="one 16x16 grid per image; bidirectional image block; sliding-window layers",
    placeholders=("<start_of_image>", "<image_soft_token>", "<end_of_image>")))
