"""FarSight: the causal-mask registers as one null key per prompt row. Per-step logits on toy-llava against
a literal reading of the patch (W = S⊙C + P, softmax over every column, ⊙C) in a hand-written forward; the
release's mask addition that wipes the registers (variant "code" = vanilla); the closed form of the
register mass; padding, parameters and stacking."""
import math

import pytest
import torch

import halluc
from halluc.errors import HallucError
from halluc.interventions.farsight import SIGMA, FarSight, register_logits
from halluc.kernels import AttentionEdit, attention_reference
from halluc.world import render_scene, scene_at
from halluc.world.model import TRAIN_WORLD
from tests.helpers import PROMPTS, first_logits
from tests.interventions.manual_lm import Edits, ManualLM

STEPS = 6


@pytest.fixture(scope="module")
def scene():
    return render_scene(scene_at(TRAIN_WORLD, "val", 3))


def patch_probabilities(s: torch.Tensor, sigma: float = SIGMA, alibi: bool = True,
                        mask_registers: bool = False) -> torch.Tensor:
    """The patch read literally on one unpadded sequence: s (1, H, L, L) raw scores -> Â (1, H, L, L).

    P = ½·P_basic + ½·P_prog (+ P_alibi) on the upper triangle, with P_basic = −σΔ, P_prog = −σπ_iΔ,
    π_i = 1 − ½·i/(L−1), P_alibi = −s_hΔ, s_h = 2^(−8(h+1)/H); W = S⊙C + P (+ the model's additive causal
    mask, finfo.min above the diagonal, as the release adds it); Â = softmax(W)⊙C.
    """
    heads, length = s.shape[1], s.shape[-1]
    causal = torch.ones(length, length).tril()
    upper = torch.ones(length, length).triu(1)
    i = torch.arange(length, dtype=torch.float32)[:, None]
    delta = (torch.arange(length, dtype=torch.float32)[None, :] - i).relu() * upper  # (L, L)
    progress = 1.0 - i / max(length - 1, 1) * 0.5
    p = 0.5 * (-sigma * delta) + 0.5 * (-sigma * progress * delta)  # (L, L)
    p = p[None, None].expand(1, heads, length, length)
    if alibi:
        slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)]).view(1, heads, 1, 1)
        p = p - delta * slopes
    w = s * causal + p
    if mask_registers:
        w = w + upper * torch.finfo(torch.float32).min
    return w.softmax(-1) * causal


def test_register_logits_are_the_log_mass_of_the_patch_registers():
    heads, length = 4, 9
    got = register_logits(torch.ones(1, length), heads, SIGMA, True)[0]  # (H, L)
    # the mass the patch's softmax puts on row i's registers, relative to a score-free lower triangle
    probs = patch_probabilities(torch.zeros(1, heads, length, length))  # scores 0: lower triangle logits 0
    i = torch.arange(length)
    register_mass = 1.0 - probs.sum(-1)[0]  # (H, L)
    expected = (register_mass / (1.0 - register_mass)).log() + (i + 1).float().log()  # e^R / (i+1) = m / (1−m)
    torch.testing.assert_close(got[:, :-1], expected[:, :-1], atol=1e-5, rtol=1e-5)
    assert torch.isinf(got[:, -1]).all()  # the last row has no future slot
    torch.testing.assert_close(register_logits(torch.ones(1, length), heads, 0.0, False)[0, 0],
                               torch.arange(length - 1, -1, -1).float().log())  # c = 0: log n


def test_left_padding_counts_the_real_tokens_only():
    padded = register_logits(torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]]), 2, SIGMA, True)
    alone = register_logits(torch.ones(1, 5), 2, SIGMA, True)
    assert torch.isinf(padded[..., :3]).all()
    torch.testing.assert_close(padded[..., 3:], alone)


@pytest.mark.parametrize("alibi", [True, False])
def test_the_null_key_is_the_patch_on_a_tiny_attention(alibi):
    """Explicit W = S⊙C + P, softmax, ⊙C == the reference with the register null key; rows sum to < 1
    except the last, whose output is plain attention's."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, 12, 8, generator=g) for _ in range(3))
    edit = AttentionEdit(null_logit=register_logits(torch.ones(1, 12), 4, SIGMA, alibi))
    got = attention_reference(q, k, v, scaling=8 ** -0.5, edit=edit).out  # (1, L, H, D)
    probs = patch_probabilities(q @ k.transpose(-1, -2) * 8 ** -0.5, alibi=alibi)
    torch.testing.assert_close(got, (probs @ v).transpose(1, 2))
    sums = probs.sum(-1)
    assert (sums[..., :-1] < 1).all() and torch.allclose(sums[..., -1], torch.ones(1, 4))
    plain = attention_reference(q, k, v, scaling=8 ** -0.5).out
    torch.testing.assert_close(got[:, -1], plain[:, -1])
    masked = patch_probabilities(q @ k.transpose(-1, -2) * 8 ** -0.5, alibi=alibi, mask_registers=True)
    torch.testing.assert_close((masked @ v).transpose(1, 2), plain)  # the release: registers wiped


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_per_step_logits_match_a_literal_reading_of_the_patch(toy, scene, variant):
    """Prefill: the patch's Â in every layer (variant "code": with the model's additive causal mask, as the
    release runs). Decode: the new row is the last row, which has no register: plain attention."""
    prompt = "Describe this image."
    got = halluc.generate(toy, [scene], [prompt], "farsight", variant=variant, max_new_tokens=STEPS,
                          return_scores=True)
    inputs = toy.adapter.build_inputs(toy.processor, [scene], [prompt])

    def attend(layer, s, query_positions):
        if s.shape[-2] == 1:  # decode
            return None
        return patch_probabilities(s, mask_registers=variant == "code")

    manual = ManualLM(toy)
    hidden = manual.forward(manual.embeddings(inputs), Edits(attend=attend))
    for step in range(len(got.tokens[0])):
        torch.testing.assert_close(got.scores[0, step], manual.logits(hidden)[0], atol=1e-4, rtol=1e-4)
        hidden = manual.forward(manual.token_embedding(got.tokens[0][step]), Edits(attend=attend))
    plain = halluc.generate(toy, [scene], [prompt], max_new_tokens=STEPS, return_scores=True)
    if variant == "code":
        assert got.tokens == plain.tokens and torch.equal(got.scores, plain.scores)
    else:
        assert not torch.allclose(got.scores[0, 0], plain.scores[0, 0], atol=1e-3)


def test_decode_steps_run_plain_attention(tiny_llava, images, monkeypatch):
    from halluc.kernels import backend

    impls = []
    original = backend.attention
    monkeypatch.setattr(backend, "attention", lambda *a, **kw: impls.append(a[0].shape[2]) or original(*a, **kw))
    halluc.generate(tiny_llava, images, PROMPTS, "farsight", max_new_tokens=4)
    assert impls and all(tq > 1 for tq in impls)  # only prefill calls took the edit path


def test_parameters_are_validated_and_each_one_acts(tiny_llava, images):
    for bad in ({"sigma": -0.1}, {"variant": "official"}, {"layers": [-1]}, {"alibi": 1}):
        with pytest.raises(HallucError, match="farsight"):
            FarSight(**bad)
    with pytest.raises(HallucError, match="layer 7 does not exist"):
        halluc.generate(tiny_llava, images, PROMPTS, "farsight", layers=[7], max_new_tokens=1)
    default = first_logits(tiny_llava, images, "farsight")
    assert FarSight(variant="code").is_identity() and not FarSight().is_identity()
    assert torch.equal(first_logits(tiny_llava, images, "farsight", variant="code"), first_logits(tiny_llava, images))
    for other in ({"sigma": 2.0}, {"alibi": False}, {"layers": [1]}):
        assert not torch.allclose(first_logits(tiny_llava, images, "farsight", **other), default), other
    assert math.isclose(SIGMA, 0.8)


def test_stacks_with_a_decoding_method_and_refuses_a_second_edit_of_one_layer(toy, scene):
    prompt = ["Is there a cup in the image?"]
    scores = halluc.generate(toy, [scene], prompt, ["farsight", "vcd"], max_new_tokens=3, return_scores=True).scores
    assert not scores.isnan().any() and scores.isfinite().any(-1).all()
    assert len(halluc.generate(toy, [scene], prompt, ["farsight", "vcd", "vhr"], num_beams=2, max_new_tokens=3)) == 1
    with pytest.raises(HallucError, match="both edit attention in layer 0"):
        halluc.generate(toy, [scene], prompt, ["farsight", "vaf"], max_new_tokens=1)
    texts = halluc.generate(toy, [scene], prompt, ["farsight", "vaf"], max_new_tokens=2, **{"farsight.layers": [2]})
    assert len(texts) == 1
