"""Adapter additions for the 2025 methods: the decoder layers' two norms as hook points (ONLY's side
branch runs the last layer's norms and MLP itself), and the prompt's system span from the chat template
(ClearSight/VAF suppresses it), on every family's tiny model."""
from __future__ import annotations

import pytest

from halluc.modeling.families import adapter_for
from tests.conftest import FAMILY_NAMES as FAMILIES

SYSTEM = "You are a confused object detector."


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_norms_resolve(family, tiny_vlm):
    model, _ = tiny_vlm(family)
    adapter = adapter_for(model)
    layer = model.get_decoder().layers[1]
    assert adapter.resolve(model, "layers.1.input_norm") is layer.input_layernorm
    assert adapter.resolve(model, "layers.-1.post_attn_norm") is layer.post_attention_layernorm
    assert adapter.resolve(model, "layers.1.attn.o_proj") is layer.self_attn.o_proj  # unchanged


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("system", [None, SYSTEM])
def test_system_span_is_what_the_template_puts_before_the_image(family, system, tiny_vlm, pil_images, prompts):
    model, processor = tiny_vlm(family)
    adapter = adapter_for(model)
    inputs = adapter.build_inputs(processor, pil_images, prompts, system=system)
    mask = adapter.system_mask(model, inputs)
    assert mask.shape == inputs["input_ids"].shape and not (mask & ~inputs["attention_mask"].bool()).any()
    tokenizer = processor.tokenizer
    for row, text in enumerate(prompts):
        rendered = adapter.prompt(processor, text, system=system)
        image = getattr(processor, "image_token", "<image>")
        if family == "instructblip":  # the processor puts the query tokens first: nothing precedes them
            assert not mask[row].any()
            continue
        before = rendered[:rendered.index(image)]
        adds_bos = tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id
        bos = tokenizer.bos_token if adds_bos and not rendered.startswith(tokenizer.bos_token or "\0") else ""
        ids = inputs["input_ids"][row][mask[row]]
        decoded = tokenizer.decode(ids)
        assert decoded.startswith(bos + before), (decoded, before)
        # then at most the image's opening markers the processor writes (InternVL's <img>, Gemma 3's
        # <start_of_image>, Idefics3's <fake_token_around_image><row_1_col_1>): no text of the prompt
        opening = len(tokenizer(bos + before, add_special_tokens=False)["input_ids"])
        assert len(ids) - opening <= 3 and text not in decoded[len(bos + before):]
        assert (SYSTEM in decoded) == (system is not None)
        first_image = adapter.image_mask(model, inputs["input_ids"])[row].nonzero()[0, 0]
        assert mask[row].nonzero().flatten()[-1] == first_image - 1  # contiguous up to the image


def test_no_system_span_without_an_image(tiny_vlm, prompts):
    model, processor = tiny_vlm("llava")
    adapter = adapter_for(model)
    text_only = adapter.build_inputs(processor, None, prompts)
    assert not adapter.system_mask(model, text_only).any()
