"""DoLa: the divergence as coded (KL(M‖q) both ways), the relative top, the premature layer per row; per-step
logits on toy-llava (greedy, sampling, beam search) against a hand-written forward; the norm switch."""
import math

import pytest
import torch

import halluc
from halluc.engine.views import ORIGINAL, Branch, build_view_batch, qualified_view
from halluc.errors import HallucError
from halluc.interventions import attach
from halluc.interventions.dola import DoLa, contrast, divergence, dola_logits, tied_embeddings
from halluc.world import render_scene, scene_at
from halluc.world.model import TRAIN_WORLD
from tests.helpers import PROMPTS, batch_and_singles, make_session
from tests.interventions.manual_lm import Edits, ManualLM

STEPS = 6


@pytest.fixture(scope="module")
def scene():
    return render_scene(scene_at(TRAIN_WORLD, "val", 5))


def literal_divergence(p_final: torch.Tensor, p_early: torch.Tensor) -> torch.Tensor:
    """(V,), (V,) probabilities -> ½[Σ M (log M − log p_N) + Σ M (log M − log p_j)] / |V|."""
    m = (p_final + p_early) / 2
    return 0.5 * ((m * (m.log() - p_final.log())).sum() + (m * (m.log() - p_early.log())).sum()) / len(m)


def test_divergence_is_the_coded_reverse_kl_form_not_js():
    gen = torch.Generator().manual_seed(0)
    final, early = torch.randn(2, 7, generator=gen), torch.randn(3, 2, 7, generator=gen)
    got = divergence(final, early)  # (3, 2)
    for layer in range(3):
        for row in range(2):
            want = literal_divergence(final[row].softmax(-1), early[layer, row].softmax(-1))
            torch.testing.assert_close(got[layer, row], want)
    p, q = final[0].softmax(-1), early[0, 0].softmax(-1)
    m = (p + q) / 2
    js = 0.5 * ((p * (p / m).log()).sum() + (q * (q / m).log()).sum()) / 7
    assert not torch.isclose(got[0, 0], js)  # the Jensen-Shannon divergence is another number


def test_relative_top_and_the_premature_layer_per_row():
    final = torch.tensor([[3.0, 2.0, 0.0, -5.0], [0.0, 0.0, 0.0, 0.0]])
    s = contrast(final, torch.zeros(2, 4), 0.1)
    a = final.log_softmax(-1)
    assert s[0, 2:].tolist() == [-math.inf, -math.inf]  # p < 0.1·max p: dropped
    torch.testing.assert_close(s[0, :2], a[0, :2] - math.log(0.25))
    assert torch.isfinite(s[1]).all()  # uniform: everything within the relative top
    torch.testing.assert_close(contrast(final, final.flip(-1), 0.0), final - final.flip(-1))  # r = 0: raw difference
    # row 0's final equals layer 0's (divergence 0): layer 1 is chosen; row 1's equals layer 1's
    early = torch.stack([torch.stack([final[0], final[0]]), torch.stack([final[1], final[1]])])  # (2, 2, 4)
    out = dola_logits(final, early, 0.1)
    torch.testing.assert_close(out[0], contrast(final[:1], early[1, :1], 0.1)[0])
    torch.testing.assert_close(out[1], contrast(final[1:], early[0, 1:], 0.1)[0])


def literal_dola(toy, inputs, tokens, layers, relative_top=0.1, norm=False):
    """The spec's §2.1 on one sample, read literally: per step s against the most divergent early exit."""
    manual = ManualLM(toy)
    head, final_norm = toy.model.lm_head, manual.lm.norm
    states = {}
    edits = Edits(layer_out=lambda layer, h: states.__setitem__(layer + 1, h[0, -1]))
    embeds = manual.embeddings(inputs)
    states[0] = embeds[0, -1]
    hidden = manual.forward(embeds, edits)
    out = []
    with torch.no_grad():
        for token in tokens:
            z = manual.logits(hidden)[0]
            exits = [head(final_norm(states[j]) if norm else states[j]).float() for j in layers]
            scores = [literal_divergence(z.softmax(-1), e.softmax(-1)) for e in exits]
            base = exits[max(range(len(exits)), key=lambda i: (scores[i], -i))]
            a, b = z.log_softmax(-1), base.log_softmax(-1)
            drop = a < a.max() + math.log(relative_top)
            out.append(a.masked_fill(drop, -math.inf) - b.masked_fill(drop, -1e3))
            h0 = manual.token_embedding(token)
            states[0] = h0[0, -1]
            hidden = manual.forward(h0, edits)
    return torch.stack(out)


@pytest.mark.parametrize("layers,norm", [((), False), ((0, 1), False), ((0, 1, 2), True)],
                         ids=["default", "two-layers", "normed"])
def test_per_step_logits_match_a_literal_reading_of_the_code(toy, scene, layers, norm):
    prompt = "Describe this image."
    band = DoLa(layers=layers).candidate_layers(3, tied_embeddings(toy.model))
    assert band == (layers or (0, 2))  # toy-llava: 3 layers, untied
    got = halluc.generate(toy, [scene], [prompt], "dola", layers=list(layers), norm=norm, max_new_tokens=STEPS,
                          return_scores=True)
    inputs = toy.adapter.build_inputs(toy.processor, [scene], [prompt])
    want = literal_dola(toy, inputs, got.tokens[0], band, norm=norm)
    torch.testing.assert_close(got.scores[0, :len(want)], want, atol=1e-4, rtol=1e-4)
    assert got.tokens[0] == want.argmax(-1).tolist()


def test_the_final_norm_switch_changes_the_early_exits(toy, scene):
    raw = halluc.generate(toy, [scene], ["Describe this image."], "dola", layers=[0, 1, 2], max_new_tokens=3,
                          return_scores=True).scores
    normed = halluc.generate(toy, [scene], ["Describe this image."], "dola", layers=[0, 1, 2], norm=True,
                             max_new_tokens=3, return_scores=True).scores
    assert not torch.equal(raw[0, 0], normed[0, 0])


def test_sampling_and_beam_search_use_the_contrast(toy, scene):
    prompt = "Describe this image."
    sampled = halluc.generate(toy, [scene], [prompt], "dola", do_sample=True, seed=4, max_new_tokens=STEPS,
                              return_scores=True)
    inputs = toy.adapter.build_inputs(toy.processor, [scene], [prompt])
    want = literal_dola(toy, inputs, sampled.tokens[0], (0, 2))
    torch.testing.assert_close(sampled.scores[0, :len(want)], want, atol=1e-4, rtol=1e-4)
    for step, token in enumerate(sampled.tokens[0]):  # every sampled token is inside the relative top
        assert torch.isfinite(want[step, token])
    beam = halluc.generate(toy, [scene], [prompt], "dola", num_beams=3, max_new_tokens=STEPS)
    assert isinstance(beam[0], str) and beam[0]


def test_batch_equals_single_rows(tiny_llava, images):
    batch, singles = batch_and_singles(tiny_llava, images, "dola", prompts=["Describe it in detail please.", "Hi"],
                                       max_new_tokens=4)
    assert batch == singles


def test_parameters_are_validated_and_missing_layers_refused(tiny_llava, images):
    for bad in ({"relative_top": 1.5}, {"relative_top": -0.1}, {"layers": [-1]}, {"layers": "low"}, {"norm": 1}):
        with pytest.raises(HallucError, match="dola: parameter"):
            DoLa(**bad)
    with pytest.raises(HallucError, match="dola: layer 9 does not exist"):
        halluc.generate(tiny_llava, images, PROMPTS, "dola", layers=[9], max_new_tokens=2)
    assert DoLa().candidate_layers(32, tied=False) == tuple(range(0, 31, 2))
    assert DoLa().candidate_layers(28, tied=True) == tuple(range(2, 27, 2))  # the HF port's start on tied heads
    assert DoLa().candidate_layers(2, tied=True) == (0,)  # nothing else left


@pytest.mark.parametrize("other", ["vcd", "pai"])
def test_stacks_with_a_contrast_and_an_in_model_method(tiny_llava, images, other):
    scores = halluc.generate(tiny_llava, images, PROMPTS, ["dola", other], max_new_tokens=3, return_scores=True).scores
    assert not scores.isnan().any() and torch.isfinite(scores).any(-1).all()


def test_only_the_original_view_is_rewritten(tiny_llava, images):
    model, adapter, processor = tiny_llava.model, tiny_llava.adapter, tiny_llava.processor
    pil = halluc.api.load_images(images)
    view = qualified_view("vcd", "noised")  # a contrast view of another method: same inputs here
    batch = build_view_batch(adapter, processor, pil, PROMPTS, [Branch(view)])
    session = make_session(tiny_llava, batch, pil, PROMPTS, views=(ORIGINAL, view))
    with attach(session, [DoLa(relative_top=0.5)]), torch.no_grad():
        logits = model(**batch).logits[:, -1]  # (4, V): original rows, then the view's
    with torch.no_grad():
        plain = model(**batch).logits[:, -1]
    torch.testing.assert_close(logits[2:], plain[2:])
    assert torch.isinf(logits[:2]).any() and torch.isfinite(logits[2:]).all()
