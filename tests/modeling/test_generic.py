"""The generic adapter on its own: on every known family it reaches the modules and image tokens the
family record's adapter does, and on a model without what it needs it names the missing piece."""
from __future__ import annotations

import pytest
import torch

from halluc.errors import HallucError
from halluc.modeling.families import adapter_for
from halluc.modeling.generic import GenericAdapter
from tests.conftest import FAMILY_NAMES
from tests.helpers import tiny_aya_vision


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_generic_adapter_finds_the_same_modules_and_image_tokens(name, tiny_vlm, batch):
    """On every known family the generic adapter reaches the modules and image tokens the record's adapter does."""
    model, _ = tiny_vlm(name)
    generic, record = GenericAdapter.for_model(model), adapter_for(model)
    assert generic.family == f"generic:{model.config.model_type}"
    # no grid and no CLS; pre-norm blocks everywhere but Gemma 3 (sandwich norms)
    assert generic.provides == ({"pre_norm_block"} if name != "gemma3" else set())
    for point in ("layers.0", "layers.1.attn", "layers.1.attn.o_proj", "layers.0.mlp", "norm", "lm_head", "vision"):
        assert generic.resolve(model, point) is record.resolve(model, point), point
    inputs = batch(name)
    assert torch.equal(generic.image_mask(model, inputs["input_ids"]), record.image_mask(model, inputs["input_ids"]))
    for generic_row, record_row in zip(generic.image_spans(model, inputs), record.image_spans(model, inputs)):
        assert torch.equal(torch.cat([s.positions for s in generic_row]), torch.cat([s.positions for s in record_row]))
        assert all(s.kind == "tokens" and s.grid == (1, len(s.positions)) for s in generic_row)


def test_generic_adapter_names_what_a_model_lacks():
    from transformers import LlamaConfig, LlamaForCausalLM
    text_only = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=2))
    with pytest.raises(HallucError, match="no image_token_id or image_token_index"):
        GenericAdapter.for_model(text_only)
    model, _ = tiny_aya_vision()
    del model.model.language_model.layers[0].self_attn.o_proj
    with pytest.raises(HallucError, match="hook point 'layers.0.attn.o_proj'.*has no 'o_proj'"):
        GenericAdapter.for_model(model)
