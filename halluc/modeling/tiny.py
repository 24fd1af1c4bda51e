"""Tiny random-init VLMs with working processors, built fully offline (tests, demos, CI).

Each family's record (`halluc.modeling.registry.Family.build_tiny`, written next to its adapter)
builds its real model class, image processor class and Processor class, configured for ~28-pixel
images, from the shared pieces here:
  - a byte-level tokenizer: the 256 byte symbols plus the family's special tokens, so any text
    round-trips exactly and the LM vocabulary stays small (~265 ids); the model's vocab_size is
    the tokenizer's length, so every id a random model emits decodes;
  - a chat template shaped like the real checkpoint's (the adapters format prompts through it).

Sizes: LM hidden 64, 2 layers, 4 heads / 2 KV heads; vision hidden 32, 2 layers. An 8-token
greedy generate takes a few tens of milliseconds on CPU.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from torch import nn
from transformers import PreTrainedTokenizerFast

from halluc.modeling import registry
from halluc.modeling.base import HFModel


def token_id(tokenizer: Any, token: str) -> int:
    """The id of one token (transformers types `convert_tokens_to_ids` as an id or a list of them)."""
    found = tokenizer.convert_tokens_to_ids(token)
    assert isinstance(found, int), f"{token!r} is not one token"
    return found


# The LM every family shares (Llama- or Qwen2-shaped); GQA with 2 KV heads, head_dim 16.
TEXT: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=512)
# CLIP-style ViT on 28x28 images with 7x7 patches: a 4x4 grid of 16 patches (+ CLS).
VIT: dict[str, Any] = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            image_size=28, patch_size=7)

LLAMA_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
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
# Qwen3-VL instruct: like Qwen2-VL's, but no default system turn.
QWEN3_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# InternVL3 / 3.5 "-hf" (chat_template.jinja): im_start turns, "<IMG_CONTEXT>\n" per image, no default system turn.
INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# LLaVA-OneVision (llava-hf, Qwen2 LM): im_start turns, images first ("<image>\n"), then the text; no default system.
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Gemma 3 instruct: bos, start_of_turn/end_of_turn, "model" for the assistant, the system text folded into the
# first user turn followed by a blank line, "<start_of_image>" per image, texts trimmed.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}{{ '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
# Idefics3 (HuggingFaceM4/Idefics3-8B-Llama3) and SmolVLM: "User:<image>text<end_of_utterance>\nAssistant:";
# the role is followed by ':' when the turn starts with an image, else by ': '. SmolVLM starts with <|im_start|>.
_IDEFICS3_TURNS = (
    "{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
IDEFICS3_TEMPLATE = "<|begin_of_text|>" + _IDEFICS3_TURNS
SMOLVLM_TEMPLATE = "<|im_start|>" + _IDEFICS3_TURNS
# Mistral Small 3.1 (Mistral3): bos, a default system prompt (the real one is longer and dated), [INST] turns,
# content in the order given ("[IMG]" per image).
MISTRAL3_SYSTEM = "You are Mistral Small 3.1, a Large Language Model (LLM) created by Mistral AI."
MISTRAL3_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{% set system_message = messages[0]['content'][0]['text'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set system_message = '" + MISTRAL3_SYSTEM + "' %}"
    "{% set loop_messages = messages %}{% endif %}{{ '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}"
    "{% for message in loop_messages %}{% if message['role'] == 'user' %}{{ '[INST]' }}"
    "{% for block in message['content'] %}{% if block['type'] == 'text' %}{{ block['text'] }}"
    "{% elif block['type'] == 'image' %}{{ '[IMG]' }}{% endif %}{% endfor %}{{ '[/INST]' }}"
    "{% else %}{{ message['content'][0]['text'] + eos_token }}{% endif %}{% endfor %}"
)


def build_tiny(family: str, seed: int = 0, attn_implementation: str | Mapping[str, str] | None = None
               ) -> tuple[nn.Module, Any]:
    """A randomly initialised tiny `family` model (eval mode) and its processor.

    The same `seed` gives bit-identical weights; the global torch RNG is left untouched.
    `attn_implementation` is a string for every sub-model or a {sub_config: impl} dict; the
    default runs the LM on the "halluc" backend and everything else on SDPA.
    """
    record = registry.family(family)
    config, processor, model_class = record.build_tiny()
    attn = _attn_implementation(config, attn_implementation)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class._from_config(config, attn_implementation=attn)
        draw_zero_initialised(model, record.tiny_random)
    return model.eval(), processor


def draw_zero_initialised(model: HFModel, names: Sequence[str]) -> None:
    """Random values (from the current RNG) for parameters the model class initialises to zero that would
    cut the image off in a random tiny model (`Family.tiny_random`: Gemma 3's multimodal projection)."""
    with torch.no_grad():
        for name in names:
            model.get_parameter(name).normal_(std=0.2)


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


def llama_tokenizer() -> PreTrainedTokenizerFast:
    return byte_tokenizer(LLAMA_SPECIALS, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>",
                          extra={"image_token": "<image>"})


def llama_text(tokenizer: Any) -> Any:
    from transformers import LlamaConfig
    return LlamaConfig(**TEXT, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)


def register_tiny_model(family: registry.Family) -> registry.OfflineModel:
    """`tiny-<family>`: the family's random-weight model as an offline model (every built-in family has one;
    a plugin's family registers its own with this)."""
    return registry.register_model(registry.OfflineModel(
        family.tiny_name, family.name, partial(build_tiny, family.name),
        note=f"{family.title}, random weights, for tests and smoke runs"))
