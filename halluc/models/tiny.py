"""Tiny random-init VLMs with working processors, built fully offline (tests, demos, CI).

Each family gets its real model class, image processor class and Processor class, configured
for ~28-pixel images, plus:
  - a byte-level tokenizer: the 256 byte symbols plus the family's special tokens, so any text
    round-trips exactly and the LM vocabulary stays small (~265 ids); the model's vocab_size is
    the tokenizer's length, so every id a random model emits decodes;
  - a chat template shaped like the real checkpoint's (the adapters format prompts through it).

Sizes: LM hidden 64, 2 layers, 4 heads / 2 KV heads; vision hidden 32, 2 layers. An 8-token
greedy generate takes a few tens of milliseconds on CPU.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from torch import nn
from transformers import PreTrainedTokenizerFast

from halluc.errors import unknown_choice

FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "instructblip")

# The LM every family shares (Llama- or Qwen2-shaped); GQA with 2 KV heads, head_dim 16.
_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)
# CLIP-style ViT on 28x28 images with 7x7 patches: a 4x4 grid of 16 patches (+ CLS).
_VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            image_size=28, patch_size=7)

_LLAMA_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]

# LLaVA-1.5 and LLaVA-NeXT-Vicuna (llava-hf): "USER: <image>\n{text} ASSISTANT:" (images first, then the text).
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# Qwen2-VL / Qwen2.5-VL instruct: default system turn, im_start/im_end turns, vision_start/image_pad/vision_end.
QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny(family: str, seed: int = 0, attn_implementation: str | Mapping[str, str] | None = None
               ) -> tuple[nn.Module, Any]:
    """A randomly initialised tiny `family` model (eval mode) and its processor.

    The same `seed` gives bit-identical weights; the global torch RNG is left untouched.
    `attn_implementation` is a string for every sub-model or a {sub_config: impl} dict; the
    default runs the LM on the "halluc" backend and everything else on SDPA.
    """
    if family not in _BUILDERS:
        raise unknown_choice("tiny model family", family, _BUILDERS)
    config, processor, model_class = _BUILDERS[family]()
    attn = _attn_implementation(config, attn_implementation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class._from_config(config, attn_implementation=attn)
    return model.eval(), processor


def _attn_implementation(config: Any, requested: str | Mapping[str, str] | None) -> str | dict[str, str]:
    if requested is None:
        requested = {key: "sdpa" for key in config.sub_configs} | {"text_config": "halluc"}
    wanted = [requested] if isinstance(requested, str) else list(requested.values())
    if "halluc" in wanted:
        # imported here so that building with sdpa/eager never touches the kernels package
        from halluc.kernels.backend import register_backend
        register_backend()
    return requested if isinstance(requested, str) else dict(requested)


# ---- tokenizers -------------------------------------------------------------------------------
def byte_tokenizer(specials: list[str], *, eos: str, pad: str, bos: str | None = None, unk: str | None = None,
                   sep: str | None = None, extra: Mapping[str, str] | None = None,
                   padding_side: str = "left") -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: ids 0..len(specials)-1 are `specials`, then one id per byte.

    With `bos` every encoded text starts with it (Llama style); with `sep` too, texts are wrapped
    as `bos text sep` (BERT style, for the Q-Former). `extra` names extra special tokens the
    processors look up as attributes (e.g. {"image_token": "<image>"}).
    """
    vocab = {tok: i for i, tok in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))  # no merges: one token per byte
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(specials)
    if bos is not None:
        single = f"{bos} $A" + (f" {sep}" if sep else "")
        marks = [(t, vocab[t]) for t in (bos, sep) if t]
        tk.post_processor = processors.TemplateProcessing(single=single, pair=f"{single} $B:1", special_tokens=marks)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos, pad_token=pad,
                                   unk_token=unk, sep_token=sep, cls_token=bos if sep else None,
                                   extra_special_tokens=dict(extra or {}), padding_side=padding_side)


def _llama_tokenizer() -> PreTrainedTokenizerFast:
    return byte_tokenizer(_LLAMA_SPECIALS, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>",
                          extra={"image_token": "<image>"})


def _llama_text(tokenizer: Any) -> Any:
    from transformers import LlamaConfig
    return LlamaConfig(**_TEXT, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)


# ---- families ---------------------------------------------------------------------------------
def _llava() -> tuple[Any, Any, type]:
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor)
    tok = _llama_tokenizer()
    config = LlavaConfig(vision_config=CLIPVisionConfig(**_VIT, projection_dim=32), text_config=_llama_text(tok),
                         image_token_index=tok.image_token_id, image_seq_length=16, vision_feature_layer=-2,
                         vision_feature_select_strategy="default")
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    # num_additional_image_tokens=1 counts the CLS that "default" then drops: 16 placeholders
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=7,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_TEMPLATE)
    return config, processor, LlavaForConditionalGeneration


def _llava_next() -> tuple[Any, Any, type]:
    from transformers import (CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessorPil, LlavaNextProcessor)
    tok = _llama_tokenizer()
    # the real pinpoints are multiples of the 336-px tile; ours of the 28-px one (1x2, 2x1, 2x2, 3x1, 1x3 tiles)
    pinpoints = [[28, 56], [56, 28], [56, 56], [84, 28], [28, 84]]
    config = LlavaNextConfig(vision_config=CLIPVisionConfig(**_VIT, projection_dim=32), text_config=_llama_text(tok),
                             image_token_index=tok.image_token_id, image_grid_pinpoints=pinpoints,
                             vision_feature_layer=-2, vision_feature_select_strategy="default")
    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                                 image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tok, patch_size=7,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=LLAVA_TEMPLATE)
    return config, processor, LlavaNextForConditionalGeneration


def _qwen_processor(processor_class: type) -> Any:
    from transformers import Qwen2VLImageProcessorPil
    tok = byte_tokenizer(_QWEN_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>")
    # patch 4, merge 2: one LM token per 8x8 pixels; 256..1024 pixels -> 4..16 image tokens
    image_processor = Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, temporal_patch_size=2,
                                               min_pixels=16 * 16, max_pixels=32 * 32)
    return processor_class(image_processor=image_processor, tokenizer=tok, chat_template=QWEN_TEMPLATE)


def _qwen_ids(tok: Any) -> dict[str, int]:
    ids = tok.convert_tokens_to_ids
    return dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))


def _qwen_text(tok: Any) -> dict[str, Any]:
    # M-RoPE: sum(mrope_section) == head_dim / 2 == 8
    rope = {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}
    # as in the real configs: bos is <|endoftext|> (the tokenizer adds none); instruct models stop on
    # <|im_end|> or <|endoftext|>
    endoftext = tok.convert_tokens_to_ids("<|endoftext|>")
    return dict(_TEXT, vocab_size=len(tok), rope_parameters=rope, pad_token_id=endoftext, bos_token_id=endoftext,
                eos_token_id=[tok.eos_token_id, endoftext])


def _qwen2_vl() -> tuple[Any, Any, type]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from halluc.models.qwen2_vl import Qwen2VLImageOnlyProcessor  # stock minus video (needs torchvision)
    processor = _qwen_processor(Qwen2VLImageOnlyProcessor)
    tok = processor.tokenizer
    vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen2VLConfig(text_config=_qwen_text(tok), vision_config=vision, **_qwen_ids(tok))
    return config, processor, Qwen2VLForConditionalGeneration


def _qwen2_5_vl() -> tuple[Any, Any, type]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from halluc.models.qwen2_vl import Qwen2_5_VLImageOnlyProcessor
    processor = _qwen_processor(Qwen2_5_VLImageOnlyProcessor)
    tok = processor.tokenizer
    # window attention over 16-px windows (2x2 merged tokens); the last block attends globally
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64, patch_size=4,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=16, fullatt_block_indexes=[1])
    config = Qwen2_5_VLConfig(text_config=_qwen_text(tok), vision_config=vision, **_qwen_ids(tok))
    return config, processor, Qwen2_5_VLForConditionalGeneration


def _instructblip() -> tuple[Any, Any, type]:
    from transformers import (BlipImageProcessorPil, InstructBlipConfig, InstructBlipForConditionalGeneration,
                              InstructBlipProcessor, InstructBlipQFormerConfig, InstructBlipVisionConfig)
    # no image token here: InstructBlipProcessor appends "<image>" itself (as the real checkpoint's does)
    tok = byte_tokenizer(_LLAMA_SPECIALS[:-1], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")
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
    config = InstructBlipConfig(vision_config=InstructBlipVisionConfig(**_VIT), qformer_config=qformer,
                                text_config=_llama_text(tok), num_query_tokens=8,
                                image_token_index=tok.convert_tokens_to_ids("<image>"))
    return config, processor, InstructBlipForConditionalGeneration


_BUILDERS: dict[str, Callable[[], tuple[Any, Any, type]]] = {
    "llava": _llava,
    "llava_next": _llava_next,
    "qwen2_vl": _qwen2_vl,
    "qwen2_5_vl": _qwen2_5_vl,
    "instructblip": _instructblip,
}
