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

from halluc.modeling.base import Adapter, HFModel, ImageSpan, ModulePaths
from halluc.modeling.registry import Checkpoint, Family, register_family
from halluc.modeling.tiny import LLAMA_SPECIALS, VIT, byte_tokenizer, llama_text, token_id


@dataclass(frozen=True)
class InstructBlipAdapter(Adapter):
    def prompt(self, processor: Any, text: str, with_image: bool = True, system: str | None = None) -> str:
        """The raw instruction (no chat template; the processor prepends the query placeholders when
        images are given); a system text is put before it on its own line."""
        return text if system is None else f"{system}\n{text}"

    def build_inputs(self, processor: Any, images: Sequence[Any] | None, prompts: Sequence[str],
                     system: str | None = None, answers: Sequence[str] | None = None) -> dict:
        inputs = super().build_inputs(processor, images, prompts, system=system, answers=answers)
        if images is None:
            return {k: v for k, v in inputs.items() if not k.startswith("qformer_")}
        order = inputs["attention_mask"].argsort(dim=1, stable=True)  # (B, T): pads first, order kept
        for key in ("input_ids", "attention_mask"):
            inputs[key] = inputs[key].gather(1, order)
        # The processor pads the Q-Former prompt on the LM tokenizer's side (left), which shifts the
        # Q-Former's absolute positions: a padded row would then differ from the same row alone.
        texts = [self.prompt(processor, p, system=system) for p in prompts]
        qformer = processor.qformer_tokenizer(texts, padding=True, padding_side="right", return_tensors="pt")
        inputs["qformer_input_ids"], inputs["qformer_attention_mask"] = qformer["input_ids"], qformer["attention_mask"]
        return inputs

    def image_spans(self, model: HFModel, inputs: dict) -> list[list[ImageSpan]]:
        """One (1, num_query_tokens) span of kind "queries" per image."""
        n = model.config.num_query_tokens
        return [[ImageSpan(p, (1, n), "queries") for p in row.nonzero().flatten().split(n)] if row.any() else []
                for row in self.image_mask(model, inputs["input_ids"])]

    def text_model(self, model: HFModel) -> HFModel:
        """The causal LM alone: the conditional model cannot run without an image."""
        return model.language_model


def tiny_instructblip() -> tuple[Any, Any, type]:
    from transformers import (
        BlipImageProcessorPil,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        InstructBlipQFormerConfig,
        InstructBlipVisionConfig,
    )
    # no image token here: InstructBlipProcessor appends "<image>" itself (as the real checkpoint's does)
    tok = byte_tokenizer(LLAMA_SPECIALS[:-1], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")
    # the Q-Former reads the prompt through its own BERT-style tokenizer; right padding keeps its
    # absolute position ids identical to those of an unpadded prompt
    qtok = byte_tokenizer(["[PAD]", "[CLS]", "[SEP]", "[UNK]"], bos="[CLS]", sep="[SEP]", eos="[SEP]",
                          pad="[PAD]", unk="[UNK]", padding_side="right")
    qformer = InstructBlipQFormerConfig(vocab_size=len(qtok), hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=64, encoder_hidden_size=32,
                                        max_position_embeddings=512, pad_token_id=qtok.pad_token_id)
    image_processor = BlipImageProcessorPil(size={"height": 28, "width": 28})
    processor = InstructBlipProcessor(image_processor=image_processor, tokenizer=tok, qformer_tokenizer=qtok,
                                      num_query_tokens=8)
    config = InstructBlipConfig(vision_config=InstructBlipVisionConfig(**VIT), qformer_config=qformer,
                                text_config=llama_text(tok), num_query_tokens=8,
                                image_token_index=token_id(tok, "<image>"))
    return config, processor, InstructBlipForConditionalGeneration


def _refuse_encoder_decoder(config) -> str | None:
    # InstructBLIP-Flan-T5 shares the model type, but its LM has no decoder-only layer stack
    if not getattr(config, "use_decoder_only_language_model", True):
        return ("instructblip with an encoder-decoder language model is not supported; "
                "use a decoder-only (Vicuna) checkpoint")
    return None


INSTRUCTBLIP = register_family(Family(
    name="instructblip", title="InstructBLIP", model_types=("instructblip",),
    model_class="InstructBlipForConditionalGeneration", processor_class="InstructBlipProcessor",
    adapter=InstructBlipAdapter("instructblip", ModulePaths(layers="language_model.model.layers",
                                                            final_norm="language_model.model.norm",
                                                            lm_head="language_model.lm_head",
                                                            vision_tower="vision_model"),
                                provides=frozenset({"pre_norm_block"})),
    tiny_name="tiny-instructblip", build_tiny=tiny_instructblip,
    checkpoints=(Checkpoint("instructblip", "Salesforce/instructblip-vicuna-7b", "InstructBLIP Vicuna-7B"),),
    notes="32 Q-Former query tokens, no 2-D grid", refuse=_refuse_encoder_decoder,
    placeholders=("<image>",)))
