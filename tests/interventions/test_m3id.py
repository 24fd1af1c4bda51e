"""M3ID: the time-growing weight, the step count of the combiner, per-step scores on toy-llava against both
prompts run by the plain model (RITUAL's raw-logit reading), the identity, batches, stacking."""
import math

import pytest
import torch

import halluc
from halluc.engine.combine import BranchCombiner, Combination
from halluc.engine.views import ORIGINAL, Branch, qualified_view
from halluc.errors import HallucError
from halluc.interventions.m3id import M3ID, MAX_WEIGHT, TEXT_VIEW
from halluc.interventions.vcd import VCD
from halluc.world import render_scene, scene_at
from halluc.world.model import TRAIN_WORLD
from tests.helpers import PROMPTS, batch_and_singles, combiner_for, first_logits

STEPS = 6


@pytest.fixture(scope="module")
def scene():
    return render_scene(scene_at(TRAIN_WORLD, "val", 2))


def test_defaults_weights_and_validation():
    m = M3ID()
    assert (m.growth, m.beta, m.first_step) == (0.02, 0.1, 0)
    assert m.weight(0) == 0.0  # RITUAL: γ_0 = 1 at the first generated token
    for t, expected in ((1, 0.0202), (5, 0.1052), (63, 2.5254)):  # e^{0.02 t} − 1
        assert m.weight(t) == pytest.approx(expected, abs=1e-4)
    assert M3ID(first_step=1).weight(0) == pytest.approx(math.exp(0.02) - 1)  # AvisC's t = 1
    assert M3ID(growth=0.02).weight(10_000) == MAX_WEIGHT and math.isfinite(M3ID(growth=1e6).weight(32_768))
    assert M3ID().branches(None) == [Branch(TEXT_VIEW, with_image=False)]
    assert M3ID(growth=0.0, beta=0.0).branches(None) == [] and M3ID(growth=0.0).branches(None)  # β alone: a row
    for bad, match in ((dict(growth=-0.1), "growth"), (dict(beta=1.5), "beta"), (dict(first_step=2), "first_step"),
                       (dict(growth=float("nan")), "finite")):
        with pytest.raises(HallucError, match=match):
            M3ID(**bad)


def test_combiner_counts_steps_from_the_first_sequence_it_sees():
    """ℓ_c + c_t(ℓ_c − ℓ_u) with t the tokens generated so far, cutoff on ℓ_c; raw logits give the same
    distribution (RITUAL combines those)."""
    method = M3ID(growth=0.3)
    combiner = combiner_for(method, [TEXT_VIEW])
    cond = torch.tensor([[3.0, 2.9, 1.0, -4.0], [0.0, 1.0, 2.0, 0.5]])
    text = torch.tensor([[0.0, 4.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
    lc, lu = cond.log_softmax(-1), text.log_softmax(-1)
    cut = lc.exp() < 0.1 * lc.exp().amax(-1, keepdim=True)
    for t, width in enumerate((7, 8, 9)):
        out = combiner(torch.zeros(4, width, dtype=torch.long), torch.cat([cond, text]))
        c = math.exp(0.3 * t) - 1
        torch.testing.assert_close(out[:2], (lc + c * (lc - lu)).masked_fill(cut, -math.inf))
        torch.testing.assert_close(out[2:], out[:2])  # both views get the same scores
        raw = (cond + c * (cond - text)).masked_fill(cond < math.log(0.1) + cond.amax(-1, keepdim=True), -math.inf)
        torch.testing.assert_close(out[:2].softmax(-1), raw.softmax(-1))
    assert torch.isinf(out[0, 3])  # p_c(3) < 0.1 max p_c is cut
    with pytest.raises(ValueError, match="needs the decode step"):  # no sequences: no step to give
        combiner_for(method, [TEXT_VIEW])(None, torch.cat([cond, text]))


@pytest.mark.parametrize("params", [{}, {"growth": 0.3, "first_step": 1}], ids=["defaults", "fast-growth"])
def test_per_step_scores_match_a_literal_reading_of_the_code(toy, scene, params):
    """RITUAL: s = z + c_t(z − z_u), −inf where z < log β + max z; z from the image prompt, z_u from the same
    prompt without its image, each run whole (no cache) on the tokens generated so far."""
    prompt = "Describe the image."
    got = halluc.generate(toy, [scene], [prompt], "m3id", max_new_tokens=STEPS, return_scores=True, **params)
    tokens = got.tokens[0]
    assert len(tokens) >= 3
    images = halluc.api.load_images([scene])
    with_image = toy.adapter.build_inputs(toy.processor, images, [prompt])
    text_only = toy.adapter.build_inputs(toy.processor, None, [prompt])
    assert "pixel_values" not in text_only and (text_only["input_ids"] != toy.model.config.image_token_id).all()

    def logits(inputs, step):
        ids = torch.cat([inputs["input_ids"], torch.tensor([tokens[:step]], dtype=torch.long)], dim=1)
        with torch.no_grad():
            out = toy.model(**{**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)})
        return out.logits[0, -1].float()

    growth, first = params.get("growth", 0.02), params.get("first_step", 0)
    for step in range(len(tokens)):
        z, z_u = logits(with_image, step), logits(text_only, step)
        gamma = math.exp(-growth * (step + first))
        s = z + (1 - gamma) / gamma * (z - z_u)
        s = s.masked_fill(z < math.log(0.1) + z.max(), -math.inf)
        torch.testing.assert_close(got.scores[0, step].log_softmax(-1), s.log_softmax(-1), atol=1e-4, rtol=1e-4)


def test_zero_is_the_identity_and_the_weight_acts(tiny_llava, images):
    vanilla = first_logits(tiny_llava, images)
    assert torch.equal(first_logits(tiny_llava, images, "m3id", **M3ID.zero_params), vanilla)
    # RITUAL's t = 0: the first token is vanilla under the cutoff alone; AvisC's t = 1 already contrasts
    apc_only = first_logits(tiny_llava, images, "m3id", growth=0.0)
    assert torch.equal(first_logits(tiny_llava, images, "m3id", growth=5.0), apc_only)
    contrasted = first_logits(tiny_llava, images, "m3id", growth=0.5, first_step=1)
    finite = apc_only.isfinite()
    assert torch.equal(contrasted.isfinite(), finite) and not torch.allclose(contrasted[finite], apc_only[finite])


def test_batch_equals_single_rows_with_prompts_of_different_lengths(tiny_llava, images):
    prompts = ["Describe the image in a few words, please.", "What is it?"]
    for mode in ({}, {"num_beams": 2}):
        batch, singles = batch_and_singles(tiny_llava, images, "m3id", prompts=prompts, growth=0.5, max_new_tokens=5,
                                           **mode)
        assert batch == singles


def test_stacked_with_vcd_the_contributions_add(tiny_llava):
    """M3ID + VCD: (1+α)ℓ − αℓ_noised + c_t(ℓ − ℓ_u), the larger cutoff on ℓ."""
    m3id, vcd = M3ID(growth=0.4), VCD()
    stack = [Combination("m3id", {TEXT_VIEW: "t"}, m3id.combine, m3id.plausibility_cutoff(), stepped=True),
             Combination("vcd", {"noised": "n"}, vcd.combine, vcd.plausibility_cutoff())]
    original, text, noised = torch.randn(3, 2, 11).unbind(0)
    combiner = BranchCombiner([ORIGINAL, "t", "n"], stack)
    combiner(torch.zeros(6, 4, dtype=torch.long), torch.cat([original, text, noised]))  # step 0
    out = combiner(torch.zeros(6, 5, dtype=torch.long), torch.cat([original, text, noised]))  # step 1
    lc, lu, ln = original.log_softmax(-1), text.log_softmax(-1), noised.log_softmax(-1)
    expected = 2 * lc - ln + (math.exp(0.4) - 1) * (lc - lu)
    expected = expected.masked_fill(lc < math.log(0.1) + lc.amax(-1, keepdim=True), -math.inf)
    torch.testing.assert_close(out[:2], expected)


@pytest.mark.parametrize("other", ["vcd", "pai", "vhr", "vaf"])
def test_stacks_with_in_model_and_decoding_methods(tiny_llava, images, other):
    for mode in ({"return_scores": True}, {"num_beams": 2}):
        out = halluc.generate(tiny_llava, images, PROMPTS, ["m3id", other], max_new_tokens=3, growth=0.5, **mode)
        if mode.get("return_scores"):
            assert not out.scores.isnan().any() and out.scores.isfinite().any(-1).all()
        else:
            assert len(out) == 2


def test_the_combination_gets_the_text_view_and_the_step(tiny_llava, images, monkeypatch):
    seen = []
    original = M3ID.combine

    def spy(self, views, step):
        seen.append((set(views), step))
        return original(self, views, step)

    monkeypatch.setattr(M3ID, "combine", spy)
    halluc.generate(tiny_llava, images, PROMPTS, "m3id", max_new_tokens=3)
    assert [step for _, step in seen] == [0, 1, 2] and all(v == {ORIGINAL, TEXT_VIEW} for v, _ in seen)
    assert qualified_view("m3id", TEXT_VIEW) == "m3id:text"
