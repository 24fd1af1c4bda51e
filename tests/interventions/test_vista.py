"""VISTA: norm-preserving steering, the steering vector, SLA's logit mix, presets, two extra passes."""
import math

import pytest
import torch

import halluc
from halluc.errors import HallucError
from halluc.interventions import attach
from halluc.interventions.vista import VISTA, mix_logits, sla_band, steer
from halluc.kernels.backend import current_edits
from tests.helpers import PROMPTS, first_logits, hook_count, make_session, settled_hook_count


def test_steer_on_hand_made_vectors():
    v = torch.tensor([[0.0, 2.0]])  # one row's steering vector, v̂ = (0, 1)
    m = torch.tensor([[[3.0, 0.0], [0.0, -2.0], [0.0, 5.0]]])  # (1, 3 tokens, 2)
    out = steer(m, v, lam=1.0)
    s = 1 / math.sqrt(2)
    # token 0 ⊥ v: cos 0 -> weight 1: norm((1,0) + (0,1)) * 3;  token 1 = −v: cos(m, −v) = 1 -> weight 2:
    # norm((0,−1) + 2·(0,1)) * 2 = (0, 2);  token 2 along v: cos(m, −v) = −1 -> weight 1: (0, 5)
    torch.testing.assert_close(out, torch.tensor([[[3 * s, 3 * s], [0.0, 2.0], [0.0, 5.0]]]))
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(steer(x, torch.randn(2, 8), lam=0.7).norm(dim=-1), x.norm(dim=-1))  # norm kept


def test_sla_mix_and_band():
    final, early = torch.tensor([[1.0, 0.0]]), torch.tensor([[[0.0, 4.0]], [[2.0, 0.0]]])
    torch.testing.assert_close(mix_logits(final, early, 0.3), torch.tensor([[0.7 + 0.3, 0.3 * 2.0]]))
    assert sla_band(32) == tuple(range(25, 31))
    assert sla_band(28) == tuple(range(21, 27))
    assert sla_band(40) == tuple(range(31, 38))
    assert sla_band(2) == (1,)


def test_presets_overrides_and_validation():
    assert VISTA().strength == (0.17, 0.3)
    assert VISTA(preset="pope").strength == (0.01, 0.3)
    assert VISTA(preset="mmhal", lam=0.05).strength == (0.05, 0.3)
    assert VISTA(lam=0, gamma=0).is_identity()
    with pytest.raises(HallucError, match="must be one of chair, pope, mmhal"):
        VISTA(preset="mme")
    with pytest.raises(HallucError, match=r"'gamma' must be in \[0, 1.0\]"):
        VISTA(gamma=1.5)
    with pytest.raises(HallucError, match="'lam'"):
        VISTA(lam=-0.1)


def test_zero_strength_is_bit_identical_and_each_part_acts(tiny_llava, images):
    vanilla = first_logits(tiny_llava, images)
    before = settled_hook_count(tiny_llava, images)
    assert torch.equal(first_logits(tiny_llava, images, "vista", lam=0.0, gamma=0.0), vanilla)
    assert not torch.allclose(first_logits(tiny_llava, images, "vista", lam=0.0), vanilla)  # SLA alone
    assert not torch.allclose(first_logits(tiny_llava, images, "vista", gamma=0.0), vanilla)  # steering alone
    assert hook_count(tiny_llava.model) == before and dict(current_edits()) == {}


def test_steering_vector_and_sla_match_hand_computation(tiny_llava, images):
    model, adapter = tiny_llava.model, tiny_llava.adapter
    pil = halluc.api.load_images(images)
    inputs = adapter.build_inputs(tiny_llava.processor, pil, PROMPTS)
    text = adapter.build_inputs(tiny_llava.processor, None, PROMPTS)
    n = adapter.num_layers(model)

    def layer_outputs(batch):
        seen = {}
        hooks = [adapter.resolve(model, f"layers.{i}").register_forward_hook(
            lambda m, a, out, i=i: seen.__setitem__(i, out)) for i in range(n)]
        try:
            with torch.no_grad():
                logits = model(**batch).logits[:, -1]
        finally:
            for h in hooks:
                h.remove()
        return seen, logits

    with_image, vanilla = layer_outputs(inputs)
    without, _ = layer_outputs(text)
    session = make_session(tiny_llava, inputs, prompts=PROMPTS)
    with attach(session, [VISTA(lam=0.0, gamma=0.3)]), torch.no_grad():  # SLA alone: band (1,)
        sla = model(**inputs).logits[:, -1]
    early = adapter.resolve(model, "lm_head")(with_image[1][:, -1])
    torch.testing.assert_close(sla, 0.7 * vanilla + 0.3 * early)
    session = make_session(tiny_llava, inputs, prompts=PROMPTS)
    with attach(session, [VISTA(lam=0.1, gamma=0.0)]), torch.no_grad():
        model(**inputs)
    for i in range(n):
        torch.testing.assert_close(session.state["vista"].vectors[i], with_image[i][:, -1] - without[i][:, -1])


def test_two_extra_passes_at_the_first_step_only(tiny_llava, images):
    layer0 = tiny_llava.adapter.resolve(tiny_llava.model, "layers.0")
    calls = []
    handle = layer0.register_forward_pre_hook(lambda m, args: calls.append(tuple(args[0].shape[:2])))
    try:
        halluc.generate(tiny_llava, images, PROMPTS, max_new_tokens=4)
        vanilla, calls[:] = list(calls), []
        halluc.generate(tiny_llava, images, PROMPTS, "vista", max_new_tokens=4)
    finally:
        handle.remove()
    text = tiny_llava.adapter.build_inputs(tiny_llava.processor, None, PROMPTS)["input_ids"].shape
    assert calls == [vanilla[0], vanilla[0], tuple(text), *vanilla[1:]]


