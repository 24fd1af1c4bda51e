"""SID: the least-attended image tokens from layer i's newest row, hidden from the contrast view's later
layers at every step; the contrast and the per-mode cutoff; per-step logits on toy-llava against a
hand-written forward of both views, each with its own cache."""
import math

import pytest
import torch

import halluc
from halluc.engine.decoding import Decoding
from halluc.errors import HallucError
from halluc.interventions.sid import SID, least_attended
from halluc.world import render_scene, scene_at
from halluc.world.model import TRAIN_WORLD
from tests.helpers import PROMPTS, combiner_for, first_logits
from tests.interventions.manual_lm import Edits, ManualLM

STEPS = 6


@pytest.fixture(scope="module")
def scene():
    return render_scene(scene_at(TRAIN_WORLD, "val", 11))


def test_least_attended_per_row_with_its_own_image_count():
    attention = torch.tensor([[0.5, 0.1, 0.3, 0.05, 0.2, 0.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    image = torch.tensor([[False, True, True, True, True, False], [False, False, True, True, True, True]])
    kept = least_attended(attention, image, share=0.5)  # 2 of 4 image tokens per row
    assert kept.tolist() == [[False, True, False, True, False, False], [False, False, True, True, False, False]]
    assert least_attended(attention, image, share=0.01).sum(-1).tolist() == [1, 1]  # at least one


def test_contrast_and_cutoff_per_mode():
    sid = SID()
    assert (sid.alpha, sid.plausibility_cutoff_for(Decoding()), sid.plausibility_cutoff_for(Decoding(do_sample=True)),
            sid.plausibility_cutoff_for(Decoding(num_beams=2))) == (0.5, 0.0, 0.1, 0.1)
    combiner = combiner_for(SID(beta=0.0), ["ct2s"])
    original, view = torch.tensor([[2.0, 1.0, -4.0]]), torch.tensor([[2.0, -1.0, 0.0]])
    lo, lv = original.log_softmax(-1), view.log_softmax(-1)
    torch.testing.assert_close(combiner(None, torch.cat([original, view]))[:1], 1.5 * lo - 0.5 * lv)


def test_a_model_needs_a_layer_after_the_selection(tiny_llava, images):
    with pytest.raises(HallucError, match="select_layer 1 leaves no later layer"):
        halluc.generate(tiny_llava, images, PROMPTS, "sid", max_new_tokens=2)


def literal_sid(toy, inputs, tokens, select=1, share=100 / 576, alpha=0.5):
    """The spec's Part B §2.1 on one sample, greedy: z from the plain view, z_d from the CT2S view."""
    ids = inputs["input_ids"][0]
    positions = (ids == toy.model.config.image_token_id).nonzero().flatten()
    start, count = positions[0].item(), len(positions)
    keep = round(share * count)
    state = {}

    def probs(layer, p, v):
        if layer == select:
            a = p.mean(1)[0][-1][start:start + count]  # head mean, newest row, the image span
            kept = a.topk(keep, largest=False).indices + start
            hidden = torch.zeros(len(ids), dtype=torch.bool)
            hidden[start:start + count] = True
            hidden[kept] = False
            state["hidden"] = hidden

    def hide(layer):
        return state["hidden"] if layer > select else None

    plain, ct2s = ManualLM(toy), ManualLM(toy)
    embeddings = plain.embeddings(inputs)
    views = [(plain, Edits()), (ct2s, Edits(probs=probs, hide=hide))]
    hidden = [lm.forward(embeddings, edits) for lm, edits in views]
    out = []
    for token in tokens:
        z, z_d = (lm.logits(h)[0] for (lm, _), h in zip(views, hidden))
        out.append((1 + alpha) * z - alpha * z_d)  # greedy: no cutoff, no processors
        hidden = [lm.forward(lm.token_embedding(token), edits) for lm, edits in views]
    return torch.stack(out)


def test_per_step_logits_match_a_literal_reading_of_the_code(toy, scene):
    prompt = "Describe this image."
    got = halluc.generate(toy, [scene], [prompt], "sid", max_new_tokens=STEPS, return_scores=True)
    inputs = toy.adapter.build_inputs(toy.processor, [scene], [prompt])
    want = literal_sid(toy, inputs, got.tokens[0])
    # ours combines log-probabilities: the same distribution as the code's raw-logit contrast
    torch.testing.assert_close(got.scores[0, :len(want)].log_softmax(-1), want.log_softmax(-1), atol=1e-4, rtol=1e-4)
    assert got.tokens[0] == want.argmax(-1).tolist()
    plain = halluc.generate(toy, [scene], [prompt], max_new_tokens=1, return_scores=True).scores[0, 0]
    assert not torch.allclose(got.scores[0, 0].log_softmax(-1), plain.log_softmax(-1), atol=1e-3)


def test_sampling_applies_the_cutoff(toy, scene):
    got = halluc.generate(toy, [scene], ["Describe this image."], "sid", do_sample=True, seed=2, max_new_tokens=3,
                          return_scores=True)
    plain = halluc.generate(toy, [scene], ["Describe this image."], max_new_tokens=1, return_scores=True).scores[0, 0]
    dropped = plain.log_softmax(-1) < plain.log_softmax(-1).max() + math.log(0.1)
    assert dropped.any() and torch.isinf(got.scores[0, 0][dropped]).all()


def test_zero_is_the_identity(tiny_llava, images):
    vanilla = first_logits(tiny_llava, images)
    zero = first_logits(tiny_llava, images, "sid", select_layer=0, **SID.zero_params)
    assert torch.equal(zero, vanilla)


@pytest.mark.parametrize("other", ["vcd", "ritual", "vhr", "vista"])
def test_stacks_with_in_model_and_decoding_methods(tiny_llava, images, other):
    texts = halluc.generate(tiny_llava, images, PROMPTS, ["sid", other], select_layer=0, max_new_tokens=3)
    assert len(texts) == 2


def test_methods_editing_the_same_layers_are_refused(tiny_llava, images):
    with pytest.raises(HallucError, match="both edit attention in layer 1"):
        halluc.generate(tiny_llava, images, PROMPTS, ["sid", "pai"], select_layer=0, layers=[1], max_new_tokens=2)
