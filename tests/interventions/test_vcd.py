"""VCD: DDPM noise on the normalised pixels, the contrast formula, identity, per-view caches, every family.

`views_match_alone` and `hook_count` are shared with the RITUAL and AGLA tests."""
import math
from dataclasses import dataclass

import pytest
import torch

import halluc
from halluc.decoding.branches import ORIGINAL, BranchCombiner
from halluc.decoding.image_views import noise_coefficients, noised_pixels
from halluc.images import load_image
from halluc.interventions import param, register
from halluc.interventions.registry import unregister
from halluc.interventions.vcd import VCD
from halluc.kernels.backend import current_edits
from tests.conftest import FAMILIES

PROMPTS = ["What is in the image?", "Describe it."]


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def views_match_alone(lvlm, method_cls, image, prompt, view_inputs: dict, steps: int = 4, **params) -> None:
    """Every view's log-probs at every step equal that view run alone, without a cache, on the same tokens."""

    @dataclass(frozen=True)
    class Recorder(method_cls):
        name = f"test-recorder-{method_cls.name}"
        seen: list = param(())  # type: ignore[assignment]

        def combine(self, views):
            self.seen.append({k: v.clone() for k, v in views.items()})
            return super().combine(views)

    register(Recorder)
    try:
        seen: list = []
        result = halluc.generate(lvlm, [image], [prompt], Recorder.name, seen=seen, max_new_tokens=steps,
                                 return_scores=True, **params)
    finally:
        unregister(Recorder.name)
    tokens = result.tokens[0]
    assert tokens and set(seen[0]) == set(view_inputs)
    for view, inputs in view_inputs.items():
        ids = torch.cat([inputs["input_ids"], torch.tensor([tokens[:-1]])], dim=1)
        with torch.no_grad():
            logits = lvlm.model(**{**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}).logits
        logits = logits[0, -len(tokens):].float().log_softmax(-1)  # (steps, V)
        for step in range(len(tokens)):
            torch.testing.assert_close(seen[step][view][0], logits[step], atol=1e-4, rtol=1e-4)


def test_noise_schedule_matches_the_official_coefficients():
    for step, (keep, spread) in {500: (0.8630, 0.5052), 999: (0.2850, 0.9585), 200: (0.9939, 0.1105)}.items():
        assert noise_coefficients(step) == pytest.approx((keep, spread), abs=1e-4)
    assert noise_coefficients(0)[0] > 0.9999


def test_noise_is_seeded_per_image_and_the_same_alone_or_in_a_batch(tiny_llava, images):
    imgs = [load_image(p) for p in images]
    processor = tiny_llava.processor.image_processor
    pixels = torch.randn(2, 3, 4, 4)
    both = noised_pixels(imgs, processor, seed=0, step=500)(pixels)
    alone = [noised_pixels([img], processor, seed=0, step=500)(pixels[i:i + 1]) for i, img in enumerate(imgs)]
    torch.testing.assert_close(both, torch.cat(alone), rtol=0, atol=0)
    eps = (both - 0.8630171 * pixels) / 0.5051747
    assert not torch.allclose(eps[0], eps[1])  # two images, two draws
    assert abs(float(eps.mean())) < 0.5 and 0.5 < float(eps.std()) < 1.5
    other = noised_pixels(imgs, processor, seed=1, step=500)(pixels)
    assert not torch.allclose(both, other)
    torch.testing.assert_close(noised_pixels(imgs, processor, seed=0, step=0)(pixels), pixels, atol=0.02, rtol=0)


def test_formula_and_cutoff_on_planted_log_probs():
    method = VCD(alpha=1.0, beta=0.5)
    original = torch.tensor([[2.0, 1.9, 0.0, -1.0]])
    noised = torch.tensor([[0.0, 2.5, 0.0, 0.0]])
    combiner = BranchCombiner([ORIGINAL, "noised"], method.combine, method.plausibility())
    out = combiner(None, torch.cat([original, noised]))
    lo, ln = original.log_softmax(-1), noised.log_softmax(-1)
    expected = (2 * lo - ln).masked_fill(lo < lo.max() + math.log(0.5), -math.inf)
    torch.testing.assert_close(out, torch.cat([expected, expected]))
    assert out[0].argmax() == 0  # token 1 is favoured by the noised view, so the contrast demotes it


def test_zero_strength_is_bit_identical_and_runs_no_extra_rows(tiny_llava, images):
    vanilla = halluc.generate(tiny_llava, images, PROMPTS, max_new_tokens=4, return_scores=True)
    same = halluc.generate(tiny_llava, images, PROMPTS, "vcd", alpha=0.0, beta=0.0, max_new_tokens=4,
                           return_scores=True)
    assert VCD(alpha=0, beta=0).is_identity() and same.tokens == vanilla.tokens
    assert torch.equal(same.scores, vanilla.scores)
    # alpha 0 through the branch engine (a negligible cutoff keeps the noised rows running): same tokens
    engine = halluc.generate(tiny_llava, images, PROMPTS, "vcd", alpha=0.0, beta=1e-9, max_new_tokens=4)
    assert engine == vanilla.texts


def test_no_hooks_or_edits_left_after_the_call_or_an_error(tiny_llava, images, monkeypatch):
    before = hook_count(tiny_llava.model)
    halluc.generate(tiny_llava, images, PROMPTS, "vcd", max_new_tokens=2)
    assert hook_count(tiny_llava.model) == before and dict(current_edits()) == {}
    monkeypatch.setattr(tiny_llava.model, "generate", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        halluc.generate(tiny_llava, images, PROMPTS, "vcd")
    assert hook_count(tiny_llava.model) == before and dict(current_edits()) == {}


def test_noised_view_keeps_its_own_cache(tiny_llava, images):
    """The released code's bug: the noised branch reused the original cache after the first token."""
    image, prompt = load_image(images[0]), PROMPTS[0]
    adapter, processor = tiny_llava.adapter, tiny_llava.processor
    original = adapter.build_inputs(processor, [image], [prompt])
    noise = noised_pixels([image], processor.image_processor, seed=0, step=500)
    noised = dict(original, pixel_values=noise(original["pixel_values"]))
    views_match_alone(tiny_llava, VCD, image, prompt, {ORIGINAL: original, "noised": noised}, alpha=1.0)


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_and_sampling_on_every_family_and_batch_equals_single(tiny_models, images, name):
    lvlm = tiny_models(name)
    batch = halluc.generate(lvlm, images, PROMPTS, "vcd", max_new_tokens=4)
    assert batch == [halluc.generate(lvlm, [images[i]], [PROMPTS[i]], "vcd", max_new_tokens=4)[0] for i in range(2)]
    assert len(halluc.generate(lvlm, images, PROMPTS, "vcd", do_sample=True, seed=3, max_new_tokens=4)) == 2


def test_beam_search_through_the_engine(tiny_llava, images):
    beams = halluc.generate(tiny_llava, images, PROMPTS, "vcd", num_beams=3, max_new_tokens=4)
    again = halluc.generate(tiny_llava, images, PROMPTS, "vcd", num_beams=3, max_new_tokens=4)
    assert len(beams) == 2 and beams == again
