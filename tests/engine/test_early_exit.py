"""The logit lens: early-exit logits of the last position equal the model's own head on that layer's output."""
import torch

import halluc
from halluc.engine.early_exit import LogitLens, last_position
from tests.helpers import PROMPTS


def test_last_layer_through_the_lens_is_the_model_output_and_hooks_stay_silent(tiny_llava, images):
    model, adapter = tiny_llava.model, tiny_llava.adapter
    inputs = adapter.build_inputs(tiny_llava.processor, halluc.api.load_images(images), PROMPTS)
    outputs = {}
    last = adapter.num_layers(model) - 1
    handles = [adapter.resolve(model, f"layers.{i}").register_forward_hook(
        lambda m, a, out, i=i: outputs.__setitem__(i, out)) for i in range(last + 1)]
    head_calls = []
    handles.append(adapter.resolve(model, "lm_head").register_forward_hook(lambda m, a, out: head_calls.append(1)))
    try:
        with torch.no_grad():
            logits = model(**inputs).logits[:, -1].float()
            head_calls.clear()
            lens = LogitLens.of(adapter, model)
            early = lens(torch.stack([last_position(outputs[i]) for i in range(last + 1)]))  # (L, B, V)
    finally:
        for h in handles:
            h.remove()
    assert early.shape == (last + 1, 2, logits.shape[-1]) and early.dtype == torch.float32
    torch.testing.assert_close(early[last], logits)  # the last layer's exit is the model's own prediction
    assert not torch.allclose(early[0], logits)
    assert head_calls == []  # the lens runs the modules without their hooks
    assert torch.equal(last_position((outputs[0], None)), outputs[0][:, -1])
