"""DeCo: candidates from the final layer, the anchor layer and its weight, the calibrated logits;
per-step logits on toy-llava (greedy, sampling, beam search) against a hand-written forward."""
import math

import pytest
import torch

import halluc
from halluc.engine.views import ORIGINAL, Branch, build_view_batch, qualified_view
from halluc.interventions import attach
from halluc.interventions.deco import DeCo, calibrate, candidates
from halluc.world import render_scene, scene_at
from halluc.world.model import TRAIN_WORLD
from tests.helpers import PROMPTS, first_logits, make_session
from tests.interventions.manual_lm import Edits, ManualLM

STEPS = 6


@pytest.fixture(scope="module")
def scene():
    return render_scene(scene_at(TRAIN_WORLD, "val", 5))


def test_candidates_anchor_and_weight_on_planted_logits():
    final = torch.tensor([[3.0, 2.0, 0.0, -5.0]]).log_softmax(-1)  # p ≈ (0.70, 0.26, 0.035, 0.0002)
    ids, in_set = candidates(final, 0.9, 20)
    assert ids[0, :2].tolist() == [0, 1] and in_set[0].tolist() == [True, True, False, False]  # 0.70 + 0.26 ≥ 0.9
    assert candidates(final, 0.9, 1)[1][0].tolist() == [True]  # capped at K
    early = torch.tensor([[[0.0, 0.0, 9.0, 0.0]], [[0.0, 2.0, 0.0, 0.0]]])  # layer 1 is surest of candidate 1
    out = calibrate(final, early, alpha=0.5, mass=0.9, most=20)
    w = early[1].softmax(-1)[0, 1]
    torch.testing.assert_close(out[0, :2], final[0, :2] + 0.5 * w * early[1, 0, :2])
    assert out[0, 2:].tolist() == [-math.inf, -math.inf]  # layer 0's favourite is no candidate: ignored
    tie = torch.zeros(2, 1, 4)  # equal everywhere: the first layer, the top candidate
    torch.testing.assert_close(calibrate(final, tie, 1.0, 0.9, 20)[0, :2], final[0, :2] + 0.25 * 0.0)


def literal_deco(toy, inputs, tokens, layers, alpha=0.6, top_p=0.9, top_k=20):
    """The spec's Part B §1.1 on one sample, read literally: per step the calibrated logits."""
    seen = {}
    manual = ManualLM(toy)
    edits = Edits(layer_out=lambda layer, h: seen.__setitem__(layer, h[:, -1]))
    hidden = manual.forward(manual.embeddings(inputs), edits)
    out = []
    for token in tokens:
        z = manual.logits(hidden)[0]
        v, ids = z.softmax(-1).topk(top_k)
        n = min(int(torch.searchsorted(v.cumsum(-1), torch.tensor(top_p), right=False)) + 1, top_k)
        chosen = ids[:n]
        early = torch.stack([manual.logits(seen[layer])[0] for layer in layers])  # (|E|, V)
        m = early.softmax(-1)[:, chosen]  # (|E|, n)
        flat = int(m.flatten().argmax())
        w = m.flatten()[flat]
        calibrated = z + alpha * w * early[flat // n]
        keep = torch.zeros_like(z, dtype=torch.bool)
        keep[chosen] = True
        out.append(calibrated.masked_fill(~keep, -math.inf))
        hidden = manual.forward(manual.token_embedding(token), edits)
    return torch.stack(out)


@pytest.mark.parametrize("layers", [(), (0, 1)], ids=["default-band", "two-layers"])
def test_per_step_logits_match_a_literal_reading_of_the_code(toy, scene, layers):
    prompt = "Describe this image."
    band = layers or DeCo().early_layers(3)
    assert band == (layers or (1,))  # 19..27 of 32 on 3 layers: layer 1
    got = halluc.generate(toy, [scene], [prompt], "deco", layers=list(layers), max_new_tokens=STEPS,
                          return_scores=True)
    inputs = toy.adapter.build_inputs(toy.processor, [scene], [prompt])
    want = literal_deco(toy, inputs, got.tokens[0], band)
    torch.testing.assert_close(got.scores[0, :len(want)], want, atol=1e-4, rtol=1e-4)
    assert got.tokens[0] == want.argmax(-1).tolist()


def test_sampling_and_beam_search_use_the_calibrated_logits(toy, scene):
    prompt = "Describe this image."
    sampled = halluc.generate(toy, [scene], [prompt], "deco", do_sample=True, seed=4, max_new_tokens=STEPS,
                              return_scores=True)
    inputs = toy.adapter.build_inputs(toy.processor, [scene], [prompt])
    want = literal_deco(toy, inputs, sampled.tokens[0], DeCo().early_layers(3))
    torch.testing.assert_close(sampled.scores[0, :len(want)], want, atol=1e-4, rtol=1e-4)
    for step, token in enumerate(sampled.tokens[0]):  # every sampled token is a candidate
        assert torch.isfinite(want[step, token])
    beam = halluc.generate(toy, [scene], [prompt], "deco", num_beams=3, max_new_tokens=STEPS)
    assert isinstance(beam[0], str) and beam[0]


def test_identity_parameters_and_alpha_zero_still_restricts(tiny_llava, images):
    vanilla = first_logits(tiny_llava, images)
    assert torch.equal(first_logits(tiny_llava, images, "deco", **DeCo.zero_params), vanilla)
    restricted = first_logits(tiny_llava, images, "deco", alpha=0.0)
    kept = torch.isfinite(restricted)
    assert (kept.sum(-1) <= 20).all() and torch.equal(restricted[kept], vanilla[kept])


@pytest.mark.parametrize("other", ["vcd", "ritual", "vista"])
def test_stacks_with_in_model_and_decoding_methods(tiny_llava, images, other):
    scores = halluc.generate(tiny_llava, images, PROMPTS, ["deco", other], max_new_tokens=3, return_scores=True).scores
    assert not scores.isnan().any() and (torch.isfinite(scores).sum(-1) <= 20).all()


def test_only_the_original_view_is_corrected(tiny_llava, images):
    model, adapter, processor = tiny_llava.model, tiny_llava.adapter, tiny_llava.processor
    pil = halluc.api.load_images(images)
    view = qualified_view("vcd", "noised")  # a contrast view of another method: same inputs here
    batch = build_view_batch(adapter, processor, pil, PROMPTS, [Branch(view)])
    session = make_session(tiny_llava, batch, pil, PROMPTS, views=(ORIGINAL, view))
    with attach(session, [DeCo()]), torch.no_grad():
        logits = model(**batch).logits[:, -1]  # (4, V): original rows, then the view's
    with torch.no_grad():
        plain = model(**batch).logits[:, -1]
    torch.testing.assert_close(logits[2:], plain[2:])
    assert torch.isinf(logits[:2]).any() and torch.isfinite(logits[2:]).all()
