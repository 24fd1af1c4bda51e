"""Tiny offline models: deterministic, generate from left-padded batches, save/load round-trip."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoProcessor

from halluc.errors import HallucError
from halluc.modeling.families import adapter_for, model_class_for, processor_class_for
from halluc.modeling.tiny import build_tiny
from tests.conftest import FAMILY_NAMES as FAMILIES


def greedy(model, inputs: dict, n: int = 8) -> torch.Tensor:
    """(B, n) new tokens; EOS is suppressed so that every row runs all n steps."""
    out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[:, inputs["input_ids"].shape[1]:]


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_weights(family):
    rng_before = torch.get_rng_state()
    a, _ = build_tiny(family, seed=3, attn_implementation="sdpa")
    b, _ = build_tiny(family, seed=3, attn_implementation="sdpa")
    c, _ = build_tiny(family, seed=4, attn_implementation="sdpa")
    assert_same_weights(a, b)
    head = adapter_for(a).paths.lm_head
    assert not torch.equal(a.get_submodule(head).weight, c.get_submodule(head).weight)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is left alone
    assert not a.training


@pytest.mark.parametrize("family", FAMILIES)
def test_is_tiny_and_vocab_matches_tokenizer(family, tiny_vlm):
    model, processor = tiny_vlm(family)
    text = adapter_for(model).text_config(model)
    assert sum(p.numel() for p in model.parameters()) < 250_000
    shape = (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads)
    assert shape == (64, 2, 4, 2)
    assert text.vocab_size == len(processor.tokenizer) < 512
    sample = "Is there a dog? Ünïcödé, 3 > 2 & <tags> stay."
    assert processor.tokenizer.decode(processor.tokenizer(sample, add_special_tokens=False)["input_ids"]) == sample


@pytest.mark.parametrize("family", FAMILIES)
def test_default_attention_backends(family, tiny_vlm):
    model, _ = tiny_vlm(family)
    impl = {key: getattr(model.config, key)._attn_implementation for key in model.config.sub_configs}
    assert impl.pop("text_config") == "halluc"
    assert set(impl.values()) == {"sdpa"}
    layer = adapter_for(model).attention(model, 0)
    assert layer.config._attn_implementation == "halluc"


def test_attn_implementation_dict_and_string():
    model, _ = build_tiny("instructblip", attn_implementation={"text_config": "eager", "qformer_config": "eager"})
    assert model.config.text_config._attn_implementation == "eager"
    assert model.config.qformer_config._attn_implementation == "eager"
    model, _ = build_tiny("llava", attn_implementation="eager")
    assert {model.config.text_config._attn_implementation, model.config.vision_config._attn_implementation} == {"eager"}


def test_unknown_family():
    with pytest.raises(HallucError, match="llava_nxt.*did you mean 'llava_next'"):
        build_tiny("llava_nxt")


def test_chat_templates_mimic_the_real_ones(tiny_vlm):
    def prompt(family, with_image=True):
        model, processor = tiny_vlm(family)
        return adapter_for(model).prompt(processor, "What?", with_image=with_image)

    assert prompt("llava") == "USER: <image>\nWhat? ASSISTANT:"
    assert prompt("llava", with_image=False) == "USER: What? ASSISTANT:"
    assert prompt("llava_next") == "USER: <image>\nWhat? ASSISTANT:"
    qwen = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            "<|vision_start|><|image_pad|><|vision_end|>What?<|im_end|>\n<|im_start|>assistant\n")
    assert prompt("qwen2_vl") == prompt("qwen2_5_vl") == qwen
    assert prompt("qwen2_vl", with_image=False) == qwen.replace("<|vision_start|><|image_pad|><|vision_end|>", "")
    assert prompt("instructblip") == "What?"


POPE_QUESTION = "Is there a dog in the image?\nAnswer the question using a single word or phrase."  # POPE, llava
QWEN_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
# each family's prompt for a POPE question, shaped like its real checkpoint's chat template
POPE_PROMPTS = {
    "llava": f"USER: <image>\n{POPE_QUESTION} ASSISTANT:",
    "llava_next": f"USER: <image>\n{POPE_QUESTION} ASSISTANT:",
    "qwen2_vl": f"{QWEN_SYSTEM}<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{POPE_QUESTION}<|im_end|>\n"
                "<|im_start|>assistant\n",
    "qwen2_5_vl": f"{QWEN_SYSTEM}<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{POPE_QUESTION}"
                  "<|im_end|>\n<|im_start|>assistant\n",
    "instructblip": POPE_QUESTION,
    "qwen3_vl": f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{POPE_QUESTION}<|im_end|>\n"
                "<|im_start|>assistant\n",
    "internvl": f"<|im_start|>user\n<IMG_CONTEXT>\n{POPE_QUESTION}<|im_end|>\n<|im_start|>assistant\n",
    "llava_onevision": f"<|im_start|>user\n<image>\n{POPE_QUESTION}<|im_end|>\n<|im_start|>assistant\n",
    "gemma3": f"<bos><start_of_turn>user\n<start_of_image>{POPE_QUESTION}<end_of_turn>\n<start_of_turn>model\n",
    "idefics3": f"<|begin_of_text|>User:<image>{POPE_QUESTION}<end_of_utterance>\nAssistant:",
    "smolvlm": f"<|im_start|>User:<image>{POPE_QUESTION}<end_of_utterance>\nAssistant:",
    "mistral3": "<s>[SYSTEM_PROMPT]You are Mistral Small 3.1, a Large Language Model (LLM) created by Mistral AI."
                f"[/SYSTEM_PROMPT][INST][IMG]{POPE_QUESTION}[/INST]",
}
# the same question with a system prompt and without the image (PAI's and VHR's text-only view with a system turn)
SYSTEM_PROMPTS = {
    "qwen3_vl": f"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{POPE_QUESTION}<|im_end|>\n"
                "<|im_start|>assistant\n",
    "internvl": f"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{POPE_QUESTION}<|im_end|>\n"
                "<|im_start|>assistant\n",
    "llava_onevision": f"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{POPE_QUESTION}<|im_end|>\n"
                       "<|im_start|>assistant\n",
    "gemma3": f"<bos><start_of_turn>user\nBe brief.\n\n{POPE_QUESTION}<end_of_turn>\n<start_of_turn>model\n",
    "idefics3": f"<|begin_of_text|>System: Be brief.<end_of_utterance>\nUser: {POPE_QUESTION}<end_of_utterance>\n"
                "Assistant:",
    "smolvlm": f"<|im_start|>System: Be brief.<end_of_utterance>\nUser: {POPE_QUESTION}<end_of_utterance>\nAssistant:",
    "mistral3": f"<s>[SYSTEM_PROMPT]Be brief.[/SYSTEM_PROMPT][INST]{POPE_QUESTION}[/INST]",
}


def test_every_family_has_a_pope_prompt():
    assert set(POPE_PROMPTS) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_pope_prompt_matches_the_real_template(family, tiny_vlm):
    model, processor = tiny_vlm(family)
    adapter = adapter_for(model)
    assert adapter.prompt(processor, POPE_QUESTION) == POPE_PROMPTS[family]
    if family in SYSTEM_PROMPTS:
        assert adapter.prompt(processor, POPE_QUESTION, with_image=False, system="Be brief.") == SYSTEM_PROMPTS[family]
    # one BOS however the template and the tokenizer share the job
    ids = adapter.build_inputs(processor, None, [POPE_QUESTION])["input_ids"][0].tolist()
    bos = processor.tokenizer.bos_token_id
    assert bos is None or ids.count(bos) == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_generate_equals_one_by_one(family, tiny_vlm, batch, pil_images, prompts):
    model, processor = tiny_vlm(family)
    inputs = batch(family)
    assert (inputs["attention_mask"][:, 0] == 0).any() and inputs["attention_mask"][:, -1].all()  # left-padded
    together = greedy(model, inputs)
    for i in range(2):
        alone = adapter_for(model).build_inputs(processor, pil_images[i:i + 1], prompts[i:i + 1])
        assert torch.equal(together[i], greedy(model, alone)[0]), f"row {i}"


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_round_trip(family, tiny_vlm, batch, pil_images, prompts, tmp_path):
    model, processor = tiny_vlm(family)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded_processor) is type(processor) is processor_class_for(model.config)
    inputs = batch(family)
    again = adapter_for(model).build_inputs(loaded_processor, pil_images, prompts)
    assert again.keys() == inputs.keys()
    assert all(torch.equal(torch.as_tensor(again[k]), torch.as_tensor(inputs[k])) for k in inputs)

    attn = {key: getattr(model.config, key)._attn_implementation for key in model.config.sub_configs}
    loaded = model_class_for(model.config).from_pretrained(tmp_path, attn_implementation=attn).eval()
    assert type(loaded) is type(model)
    assert_same_weights(loaded, model)
    assert torch.equal(greedy(loaded, inputs), greedy(model, inputs))

