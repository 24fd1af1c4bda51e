"""PAI: the s + α|s| boost on image keys (last row), guidance against the text-only view, the prefill switch."""
import math

import pytest
import torch

import halluc
from halluc.decoding.branches import ORIGINAL, Branch, BranchCombiner, build_view_batch
from halluc.errors import HallucError
from halluc.interventions import Session, attach
from halluc.interventions.pai import PAI, TEXT_VIEW, default_layers, guide
from halluc.kernels import AttentionEdit, attention_reference
from halluc.kernels.backend import current_edits
from tests.conftest import FAMILIES

PROMPTS = ["Describe the image.", "What is it?"]
TINY = dict(layers=[0, 1])  # the tiny models have 2 layers; the default (2..L-1) is empty there


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def scores(lvlm, images, method="none", steps=1, **params):
    return halluc.generate(lvlm, images, PROMPTS, method, max_new_tokens=steps, return_scores=True, **params).scores


def score_rows(s: torch.Tensor, image: list[bool], **edit) -> torch.Tensor:
    """Attention rows for planted scores: q (Tq, Tk) are the scores (k = I, scaling 1), v = I."""
    tq, tk = s.shape
    q, k, v = s[None, None], torch.eye(tk)[None, None], torch.eye(tk)[None, None]
    e = AttentionEdit(image_columns=torch.tensor([image]), **edit)
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
    out = score_rows(s, image, pai_alpha=alpha)
    boosted = s[1] + alpha * s[1].abs() * torch.tensor(image)  # last row: s + α|s| on image keys
    torch.testing.assert_close(out[1], boosted.softmax(-1))
    plain = s[0].masked_fill(torch.arange(5) > 3, -math.inf).softmax(-1)  # earlier row: untouched
    torch.testing.assert_close(out[0], plain)
    # every row with last_row_only=False
    out_all = score_rows(s, image, pai_alpha=alpha, pai_last_row_only=False)
    expected0 = (s[0] + alpha * s[0].abs() * torch.tensor(image)).masked_fill(torch.arange(5) > 3, -math.inf)
    torch.testing.assert_close(out_all[0], expected0.softmax(-1))
    # a row with no image columns (the text-only view) is bit-identical to no edit
    assert torch.equal(score_rows(s, [False] * 5, pai_alpha=alpha), score_rows(s, [False] * 5))


def test_method_edits_carry_alpha_on_the_chosen_layers(tiny_llava, images):
    pil = halluc.api.load_images(images)
    inputs = tiny_llava.adapter.build_inputs(tiny_llava.processor, pil, PROMPTS)
    session = Session(tiny_llava, inputs, images=pil, prompts=PROMPTS)
    edits = PAI(alpha=0.3, layers=[1], last_row_only=False).attention_edits(session)
    assert list(edits) == [1] and edits[1].pai_alpha == 0.3 and not edits[1].pai_last_row_only
    assert PAI(alpha=0.0, **TINY).attention_edits(session) == {}


def test_guidance_formula_and_cutoff_on_planted_logits():
    method = PAI(gamma=1.1)
    combiner = BranchCombiner([ORIGINAL, TEXT_VIEW], method.combine, method.plausibility())
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
        assert m.is_identity() and m.branches(None) == [] and m.hooks(None) == []
        assert torch.equal(scores(tiny_llava, images, "pai", **params, **TINY), vanilla)
    assert not torch.allclose(scores(tiny_llava, images, "pai", alpha=0.5, gamma=1.0, **TINY), vanilla)
    assert PAI(alpha=0.5).branches(None) == [Branch(TEXT_VIEW, with_image=False)]


def test_boost_leaves_the_text_only_rows_alone(tiny_llava, images):
    """Same view batch, same (reference) attention path: the text rows are bit-identical, the image rows move."""
    model, adapter, processor = tiny_llava.model, tiny_llava.adapter, tiny_llava.processor
    pil = halluc.api.load_images(images)
    batch = build_view_batch(adapter, processor, pil, PROMPTS, [Branch(TEXT_VIEW, with_image=False)])
    session = Session(tiny_llava, batch, images=pil, prompts=PROMPTS, views=(ORIGINAL, TEXT_VIEW))
    with attach(session, [PAI(alpha=0.5, last_row_only=False, **TINY)]), torch.no_grad():
        boosted = model(**batch).logits
    no_image = torch.zeros_like(session.image_mask)  # a boost with no image columns anywhere: the same path
    reference = Session(tiny_llava, batch, images=pil, prompts=PROMPTS, views=(ORIGINAL, TEXT_VIEW))
    reference.__dict__["image_mask"] = no_image
    with attach(reference, [PAI(alpha=0.5, last_row_only=False, **TINY)]), torch.no_grad():
        plain = model(**batch).logits
    assert not session.image_mask[2:].any() and session.image_mask[:2].any()
    assert torch.equal(boosted[2:], plain[2:])
    assert not torch.allclose(boosted[:2], plain[:2])


def test_prefill_switch(tiny_llava, images):
    """boost_prefill=False (the official CFG runs): the first token is predicted without the boost, later ones with it."""
    guided_only = scores(tiny_llava, images, "pai", steps=3, alpha=0.0, **TINY)
    official = scores(tiny_llava, images, "pai", steps=3, alpha=0.8, boost_prefill=False, **TINY)
    ours = scores(tiny_llava, images, "pai", steps=3, alpha=0.8, **TINY)
    assert torch.equal(official[:, 0], guided_only[:, 0])
    assert not torch.allclose(ours[:, 0], guided_only[:, 0])
    finite = torch.isfinite(guided_only[:, 1])
    assert not torch.allclose(official[:, 1][finite], guided_only[:, 1][finite])


def test_no_hooks_or_edits_left_after_success_or_error(tiny_llava, images, monkeypatch):
    before = hook_count(tiny_llava.model)
    implementation = tiny_llava.model.config.text_config._attn_implementation
    halluc.generate(tiny_llava, images, PROMPTS, "pai", boost_prefill=False, max_new_tokens=2, **TINY)
    assert hook_count(tiny_llava.model) == before and dict(current_edits()) == {}

    def explode(*args, **kwargs):
        raise RuntimeError("generation failed")

    monkeypatch.setattr(tiny_llava.model, "generate", explode)
    with pytest.raises(RuntimeError, match="generation failed"):
        halluc.generate(tiny_llava, images, PROMPTS, "pai", boost_prefill=False, **TINY)
    assert hook_count(tiny_llava.model) == before and dict(current_edits()) == {}
    assert tiny_llava.model.config.text_config._attn_implementation == implementation


@pytest.mark.parametrize("name", FAMILIES)
def test_generates_on_every_family_and_batch_equals_single(tiny_models, images, name):
    lvlm = tiny_models(name)
    params = dict(alpha=0.5, max_new_tokens=3, **TINY)
    batch = halluc.generate(lvlm, images, PROMPTS, "pai", **params)
    singles = [halluc.generate(lvlm, [images[i]], [PROMPTS[i]], "pai", **params)[0] for i in range(2)]
    assert batch == singles


def test_beam_search_and_sampling_run(tiny_llava, images):
    assert len(halluc.generate(tiny_llava, images, PROMPTS, "pai", num_beams=2, max_new_tokens=3, **TINY)) == 2
    assert len(halluc.generate(tiny_llava, images, PROMPTS, "pai", do_sample=True, seed=1, max_new_tokens=3,
                               **TINY)) == 2
