"""PAI: the s + α|s| boost on image keys (last row), guidance against the text-only view, the prefill switch."""
import math

import pytest
import torch

import halluc
from halluc.engine.views import ORIGINAL, Branch, build_view_batch, qualified_view
from halluc.errors import HallucError
from halluc.interventions import attach
from halluc.interventions.pai import PAI, TEXT_VIEW, default_layers, guide
from halluc.kernels import AttentionEdit, ScoreBoost, attention_reference
from tests.helpers import combiner_for, make_session

PROMPTS = ["Describe the image.", "What is it?"]
TINY = dict(layers=[0, 1])  # the tiny models have 2 layers; the default (2..L-1) is empty there


def scores(lvlm, images, method="none", steps=1, **params):
    return halluc.generate(lvlm, images, PROMPTS, method, max_new_tokens=steps, return_scores=True, **params).scores


def score_rows(s: torch.Tensor, image: list[bool], **edit) -> torch.Tensor:
    """Attention rows for planted scores: q (Tq, Tk) are the scores (k = I, scaling 1), v = I."""
    tq, tk = s.shape
    q, k, v = s[None, None], torch.eye(tk)[None, None], torch.eye(tk)[None, None]
    e = AttentionEdit(columns=torch.tensor([image]), **edit)
    return attention_reference(q, k, v, None, scaling=1.0, edit=e).out[0, :, 0]  # (Tq, Tk) = final attention


def test_defaults_and_layers():
    m = PAI()
    assert (m.alpha, m.gamma, m.beta, m.use_cfg, m.last_row_only, m.boost_prefill) == (0.2, 1.1, 0.1, True, True, True)
    assert default_layers(32) == tuple(range(2, 32)) and default_layers(2) == ()
    assert PAI(layers=[3, 1, 3]).layers == (1, 3)
    with pytest.raises(HallucError, match="layer indices"):
        PAI(layers=(-1,))
    with pytest.raises(HallucError, match="the model has 2 layers"):
        PAI(layers=(5,)).chosen_layers(2)
    with pytest.raises(HallucError, match="alpha"):
        PAI(alpha=-0.1)


def test_boost_on_a_hand_made_score_row():
    s = torch.tensor([[1.0, -2.0, 0.5, 3.0, 0.0],
                      [2.0, -1.0, 1.5, -0.5, 1.0]])  # query rows at key positions 3 and 4 (causal)
    image = [False, True, True, True, False]
    alpha = 0.5
    out = score_rows(s, image, boost=ScoreBoost(alpha))
    boosted = s[1] + alpha * s[1].abs() * torch.tensor(image)  # last row: s + α|s| on image keys
    torch.testing.assert_close(out[1], boosted.softmax(-1))
    plain = s[0].masked_fill(torch.arange(5) > 3, -math.inf).softmax(-1)  # earlier row: untouched
    torch.testing.assert_close(out[0], plain)
    # every row with last_row_only=False
    out_all = score_rows(s, image, boost=ScoreBoost(alpha, last_row_only=False))
    expected0 = (s[0] + alpha * s[0].abs() * torch.tensor(image)).masked_fill(torch.arange(5) > 3, -math.inf)
    torch.testing.assert_close(out_all[0], expected0.softmax(-1))
    # a row with no image columns (the text-only view) is bit-identical to no edit
    assert torch.equal(score_rows(s, [False] * 5, boost=ScoreBoost(alpha)), score_rows(s, [False] * 5))


def test_method_edits_carry_alpha_on_the_chosen_layers(tiny_llava, images):
    pil = halluc.api.load_images(images)
    inputs = tiny_llava.adapter.build_inputs(tiny_llava.processor, pil, PROMPTS)
    session = make_session(tiny_llava, inputs, pil, PROMPTS)
    edits = PAI(alpha=0.3, layers=[1], last_row_only=False).attention_edits(session)
    assert list(edits) == [1] and edits[1].boost.strength == 0.3 and not edits[1].boost.last_row_only
    assert PAI(alpha=0.0, **TINY).attention_edits(session) == {}


def test_guidance_formula_and_cutoff_on_planted_logits():
    method = PAI(gamma=1.1)
    combiner = combiner_for(method, [TEXT_VIEW])
    cond = torch.tensor([[3.0, 2.9, 1.0, -4.0], [0.0, 1.0, 2.0, 0.5]])
    text = torch.tensor([[0.0, 4.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
    out = combiner(None, torch.cat([cond, text]))
    lc, lu = cond.log_softmax(-1), text.log_softmax(-1)
    expected = (1.1 * (lc - lu) + lu).masked_fill(lc.exp() < 0.1 * lc.exp().amax(-1, keepdim=True), -math.inf)
    torch.testing.assert_close(out[:2], expected)
    torch.testing.assert_close(out[2:], expected)  # both views get the same scores
    assert torch.isinf(out[0, 3]) and torch.isfinite(out[0, :3]).all()  # p_c(3) < 0.1 max p_c is cut
    torch.testing.assert_close(guide(lc, lu, 1.0), lc)  # γ = 1: the conditional model


def test_zero_strength_is_bit_identical_with_no_branch_hook_or_edit(tiny_llava, images):
    vanilla = scores(tiny_llava, images)
    for params in (dict(alpha=0.0, gamma=1.0), dict(alpha=0.0, use_cfg=False, gamma=2.0)):
        m = PAI(**params, **TINY)
        assert m.is_identity() and m.branches(None) == [] and m.hooks(None) == []  # no branch, no hook
        assert torch.equal(scores(tiny_llava, images, "pai", **params, **TINY), vanilla)
    assert not torch.allclose(scores(tiny_llava, images, "pai", alpha=0.5, gamma=1.0, **TINY), vanilla)
    assert PAI(alpha=0.5).branches(None) == [Branch(TEXT_VIEW, with_image=False)]


def test_boost_leaves_the_text_only_rows_alone(tiny_llava, images):
    """Same view batch, same (reference) attention path: the text rows are bit-identical, the image rows move."""
    model, adapter, processor = tiny_llava.model, tiny_llava.adapter, tiny_llava.processor
    pil = halluc.api.load_images(images)
    view = qualified_view("pai", TEXT_VIEW)
    batch = build_view_batch(adapter, processor, pil, PROMPTS, [Branch(view, with_image=False)])
    session = make_session(tiny_llava, batch, pil, PROMPTS, views=(ORIGINAL, view))
    with attach(session, [PAI(alpha=0.5, last_row_only=False, **TINY)]), torch.no_grad():
        boosted = model(**batch).logits
    no_image = torch.zeros_like(session.image_mask)  # a boost with no image columns anywhere: the same path
    reference = make_session(tiny_llava, batch, pil, PROMPTS, views=(ORIGINAL, view))
    reference.__dict__["image_mask"] = no_image
    with attach(reference, [PAI(alpha=0.5, last_row_only=False, **TINY)]), torch.no_grad():
        plain = model(**batch).logits
    assert not session.image_mask[2:].any() and session.image_mask[:2].any()
    assert torch.equal(boosted[2:], plain[2:])
    assert not torch.allclose(boosted[:2], plain[:2])


def test_prefill_switch(tiny_llava, images):
    """boost_prefill=False (the official CFG runs): the first token is predicted without the boost, later
    ones with it."""
    guided_only = scores(tiny_llava, images, "pai", steps=3, alpha=0.0, **TINY)
    official = scores(tiny_llava, images, "pai", steps=3, alpha=0.8, boost_prefill=False, **TINY)
    ours = scores(tiny_llava, images, "pai", steps=3, alpha=0.8, **TINY)
    assert torch.equal(official[:, 0], guided_only[:, 0])
    assert not torch.allclose(ours[:, 0], guided_only[:, 0])
    finite = torch.isfinite(guided_only[:, 1])
    assert not torch.allclose(official[:, 1][finite], guided_only[:, 1][finite])


