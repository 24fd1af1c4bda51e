"""Helpers shared across the test suite: hook counting, method runs, sessions and combiners."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
import torch

import halluc
from halluc.engine.combine import BranchCombiner, Combination
from halluc.engine.decoding import Decoding
from halluc.engine.views import ORIGINAL, ViewLayout, qualified_view
from halluc.interventions import Request, Session, param, register
from halluc.interventions.registry import unregister

PROMPTS = ["Describe the image.", "What is it?"]


def hook_count(model) -> int:
    """Forward and forward-pre hooks on every submodule."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def settled_hook_count(lvlm, images) -> int:
    """Hooks after one vanilla call: transformers adds its output-capture hooks on first use."""
    halluc.generate(lvlm, images, PROMPTS, max_new_tokens=1)
    return hook_count(lvlm.model)


def first_logits(lvlm, images, method="none", prompts=PROMPTS, **params):
    return halluc.generate(lvlm, images, prompts, method, max_new_tokens=1, return_scores=True, **params).scores[:, 0]


def generate_failing(lvlm, images, method, monkeypatch, **params) -> None:
    """Run `method` with the model's generate raising, and check the error comes through."""

    def explode(*args, **kwargs):
        raise RuntimeError("generation failed")

    monkeypatch.setattr(lvlm.model, "generate", explode)
    with pytest.raises(RuntimeError, match="generation failed"):
        halluc.generate(lvlm, images, PROMPTS, method, **params)


def batch_and_singles(lvlm, images, method, prompts=PROMPTS, **kwargs) -> tuple[list[str], list[str]]:
    """The prompts' answers generated as one batch, and one at a time."""
    batch = halluc.generate(lvlm, images, prompts, method, **kwargs)
    singles = [halluc.generate(lvlm, [images[i]], [prompts[i]], method, **kwargs)[0] for i in range(len(prompts))]
    return batch, singles


def make_session(lvlm, inputs: dict, images=None, prompts: Sequence[str] = PROMPTS, views=(ORIGINAL,),
                 decoding: Decoding | None = None) -> Session:
    """A Session over `inputs` (views given by their batch names, e.g. `qualified_view("pai", "text")`)."""
    request = Request(lvlm, list(images or []), list(prompts), decoding or Decoding())
    return Session(request, inputs, ViewLayout(tuple(views), len(prompts)))


def combiner_for(method, branches: Sequence[str], sampler=None) -> BranchCombiner:
    """The logits processor generation builds for `method` alone with these branch names."""
    views = [ORIGINAL, *(qualified_view(method.name, b) for b in branches)]
    combination = Combination(method.name, {b: qualified_view(method.name, b) for b in branches}, method.combine,
                              method.plausibility_cutoff(), method.stepped)
    return BranchCombiner(views, [combination], sampler)


def views_match_alone(lvlm, method_cls, image, prompt, view_inputs: dict, steps: int = 4, **params) -> None:
    """Every view's log-probs at every step equal that view run alone, without a cache, on the same tokens."""

    @dataclass(frozen=True)
    class Recorder(method_cls):
        name = f"test-recorder-{method_cls.name}"
        seen: list = param(())  # type: ignore[assignment]

        def combine(self, views):
            self.seen.append({k: v.clone() for k, v in views.items()})
            return super().combine(views)

    register(Recorder)
    try:
        seen: list = []
        result = halluc.generate(lvlm, [image], [prompt], Recorder.name, seen=seen, max_new_tokens=steps,
                                 return_scores=True, **params)
    finally:
        unregister(Recorder.name)
    tokens = result.tokens[0]
    assert tokens and set(seen[0]) == set(view_inputs)
    for view, inputs in view_inputs.items():
        ids = torch.cat([inputs["input_ids"], torch.tensor([tokens[:-1]])], dim=1)
        with torch.no_grad():
            logits = lvlm.model(**{**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}).logits
        logits = logits[0, -len(tokens):].float().log_softmax(-1)  # (steps, V)
        for step in range(len(tokens)):
            torch.testing.assert_close(seen[step][view][0], logits[step], atol=1e-4, rtol=1e-4)


# ---- a model class no family record knows (for the generic adapter) ----------------------------
AYA_SPECIALS = ["<PAD>", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", "<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>",
                "<|CHATBOT_TOKEN|>", "<|SYSTEM_TOKEN|>", "<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>",
                "<|IMG_LINE_BREAK|>", "<image>"]
# Aya Vision's turns (Cohere): bos, START_OF_TURN + role token, the content, END_OF_TURN
AYA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|START_OF_TURN_TOKEN|>' }}"
    "{% if message['role'] == 'user' %}{{ '<|USER_TOKEN|>' }}{% elif message['role'] == 'system' %}"
    "{{ '<|SYSTEM_TOKEN|>' }}{% else %}{{ '<|CHATBOT_TOKEN|>' }}{% endif %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>{% else %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{{ '<|END_OF_TURN_TOKEN|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}"
)


def tiny_aya_vision(seed: int = 0, attn_implementation: str = "sdpa"):
    """(model, processor): a tiny Aya Vision (SigLIP, pixel shuffle, tiles, Cohere2 LM with a sliding-window
    layer), an architecture halluc has no family record for."""
    from transformers import (
        AyaVisionConfig,
        AyaVisionForConditionalGeneration,
        AyaVisionProcessor,
        Cohere2Config,
        GotOcr2ImageProcessorPil,
        SiglipVisionConfig,
    )

    from halluc.modeling.tiny import TEXT, VIT, byte_tokenizer
    tok = byte_tokenizer(AYA_SPECIALS, bos="<BOS_TOKEN>", eos="<|END_OF_TURN_TOKEN|>", pad="<PAD>")
    # 28-px tiles of 7-px patches, pixel-shuffled 2x2: 4 tokens per tile, up to 4 tiles + the global one
    image_processor = GotOcr2ImageProcessorPil(size={"height": 28, "width": 28}, crop_to_patches=True, max_patches=4)
    processor = AyaVisionProcessor(image_processor=image_processor, tokenizer=tok, patch_size=7, img_size=28,
                                   downsample_factor=2, chat_template=AYA_TEMPLATE)
    text = Cohere2Config(**TEXT, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, sliding_window=16,
                         layer_types=["sliding_attention", "full_attention"])
    config = AyaVisionConfig(vision_config=SiglipVisionConfig(**VIT), text_config=text, downsample_factor=2,
                             image_token_index=tok.convert_tokens_to_ids("<|IMG_PATCH|>"), tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AyaVisionForConditionalGeneration._from_config(config, attn_implementation=attn_implementation)
    return model.eval(), processor
