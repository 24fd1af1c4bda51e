"""MemVR: the top-10 entropy trigger on early exits, the FFN visual memory in the next layer, once per
forward, at the prefill and every decode step; per-step logits on toy-llava against a hand-written forward."""
import math

import pytest
import torch

import halluc
from halluc.engine.early_exit import top_entropy
from halluc.errors import HallucError
from halluc.interventions.memvr import MemVR, retrace
from halluc.world import render_scene, scene_at
from halluc.world.model import TRAIN_WORLD
from tests.helpers import PROMPTS, first_logits
from tests.interventions.manual_lm import Edits, ManualLM

STEPS = 6


@pytest.fixture(scope="module")
def scene():
    return render_scene(scene_at(TRAIN_WORLD, "val", 7))


def test_entropy_and_memory_on_hand_made_tensors():
    flat = torch.zeros(1, 30)
    assert top_entropy(flat).item() == pytest.approx(1.0)  # ten equal logits: entropy ln 10 / ln 10
    assert top_entropy(torch.tensor([[50.0] + [0.0] * 29])).item() == pytest.approx(0.0, abs=1e-6)
    x, v = torch.randn(1, 3, 4), torch.randn(1, 5, 4)
    f = torch.randn(1, 3, 4)
    out = retrace(f, x, v, torch.ones(1, 3, dtype=torch.bool), alpha=0.25)
    a = (x @ v[0].T) @ v[0]
    torch.testing.assert_close(out, 0.75 * f + 0.25 * (f.abs().mean() / a.abs().mean()) * a)
    padded = retrace(f, x, torch.cat([v, torch.zeros(1, 2, 4)], 1), torch.ones(1, 3, dtype=torch.bool), 0.25)
    torch.testing.assert_close(padded, out)  # zero rows of the memory add nothing
    gram = retrace(f, x, v, None, 0.25, gram=v.mT @ v)  # x·(Vᵀ·V): the same product, associated the other way
    torch.testing.assert_close(gram, retrace(f, x, v, None, 0.25))
    zero = torch.zeros(1, 5, 4)
    assert torch.equal(retrace(f, x, zero, None, 0.25, gram=zero.mT @ zero), f)  # a zero memory: f unchanged


def test_band_scales_by_depth_and_needs_a_next_layer():
    assert MemVR().band(32) == tuple(range(6, 16))  # the code's 5 < l < 16
    assert MemVR().band(3) == (0, 1) and MemVR().band(2) == (0,)
    with pytest.raises(HallucError, match="injection needs a next layer"):
        MemVR(layers=[2]).band(3)


def literal_memvr(toy, inputs, tokens, band, alpha=0.12, tau=0.75):
    """The spec's Part A §3.1 on one sample: per step the logits and the layer that fired (None)."""
    layers = toy.model.model.language_model.layers
    manual = ManualLM(toy)
    embeddings = manual.embeddings(inputs)
    memory = embeddings[0, inputs["input_ids"][0] == toy.model.config.image_token_id].float()  # V (N_v, d)
    state = {}

    def layer_out(layer, h):
        if layer in band and state["fired"] is None:
            g = manual.logits(h[:, -1])[0].topk(10).values
            p = g.softmax(-1)
            if -(p * p.log()).sum() / math.log(10) > tau:
                state["fired"] = layer

    def mlp(layer, x, f):
        if state["fired"] is None or layer != state["fired"] + 1:
            return f
        c1 = layers[layer].mlp.up_proj.weight.abs().mean() / memory.abs().mean()
        c2 = layers[layer].mlp.down_proj.weight.abs().mean() / memory.abs().mean()
        w1, w2 = c1 * memory, c2 * memory.T
        a = (x.float() @ w1.T) @ w2.T
        return (1 - alpha) * f + alpha * (f.abs().mean() / a.abs().mean()) * a

    edits = Edits(layer_out=layer_out, mlp=mlp)
    out, fired = [], []
    state["fired"] = None
    hidden = manual.forward(embeddings, edits)
    for token in tokens:
        out.append(manual.logits(hidden)[0])
        fired.append(state["fired"])
        state["fired"] = None
        hidden = manual.forward(manual.token_embedding(token), edits)
    return torch.stack(out), fired


@pytest.mark.parametrize("tau", [0.75, 0.3], ids=["default", "low-threshold"])
def test_per_step_logits_match_a_literal_reading_of_the_code(toy, scene, tau):
    prompt = "Describe this image."
    got = halluc.generate(toy, [scene], [prompt], "memvr", threshold=tau, max_new_tokens=STEPS, return_scores=True)
    inputs = toy.adapter.build_inputs(toy.processor, [scene], [prompt])
    want, fired = literal_memvr(toy, inputs, got.tokens[0], MemVR().band(3), tau=tau)
    torch.testing.assert_close(got.scores[0, :len(want)], want, atol=1e-4, rtol=1e-4)
    assert any(f is not None for f in fired), fired  # the trigger fires on this caption
    plain = halluc.generate(toy, [scene], [prompt], max_new_tokens=1, return_scores=True).scores[0, 0]
    assert not torch.allclose(got.scores[0, 0], plain, atol=1e-4) or fired[0] is None


def test_a_threshold_of_one_never_fires_and_zero_alpha_is_the_identity(tiny_llava, images):
    vanilla = first_logits(tiny_llava, images)
    assert torch.equal(first_logits(tiny_llava, images, "memvr", alpha=0.0), vanilla)
    assert torch.allclose(first_logits(tiny_llava, images, "memvr", threshold=1.0), vanilla)
    assert not torch.allclose(first_logits(tiny_llava, images, "memvr", threshold=0.0, alpha=0.5), vanilla)


def test_text_only_rows_never_inject(tiny_llava, images):
    # stacked with PAI's text-only view: those rows have no visual memory; nothing breaks, no NaN
    got = halluc.generate(tiny_llava, images, PROMPTS, ["memvr", "pai"], threshold=0.0, max_new_tokens=3,
                          return_scores=True, **{"pai.layers": [1]})
    assert not got.scores.isnan().any()


@pytest.mark.parametrize("other", ["vcd", "ritual", "vhr", "vista"])
def test_stacks_with_in_model_and_decoding_methods(tiny_llava, images, other):
    texts = halluc.generate(tiny_llava, images, PROMPTS, ["memvr", other], max_new_tokens=3, threshold=0.0)
    assert len(texts) == 2
