"""VCD: DDPM noise on the normalised pixels, the contrast formula, per-view caches.

Identity at zero strength, nothing left behind, batch == single and every decoding mode on every
family: `tests/interventions/test_contract.py`."""
import math

import pytest
import torch

import halluc
from halluc.engine.image_views import noise_coefficients, noised_pixels
from halluc.engine.views import ORIGINAL
from halluc.images import load_image
from halluc.interventions.vcd import VCD
from tests.helpers import combiner_for, views_match_alone

PROMPTS = ["What is in the image?", "Describe it."]


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
    combiner = combiner_for(method, ["noised"])
    out = combiner(None, torch.cat([original, noised]))
    lo, ln = original.log_softmax(-1), noised.log_softmax(-1)
    expected = (2 * lo - ln).masked_fill(lo < lo.max() + math.log(0.5), -math.inf)
    torch.testing.assert_close(out, torch.cat([expected, expected]))
    assert out[0].argmax() == 0  # token 1 is favoured by the noised view, so the contrast demotes it




def test_noised_view_keeps_its_own_cache(tiny_llava, images):
    """The released code's bug: the noised branch reused the original cache after the first token."""
    image, prompt = load_image(images[0]), PROMPTS[0]
    adapter, processor = tiny_llava.adapter, tiny_llava.processor
    original = adapter.build_inputs(processor, [image], [prompt])
    noise = noised_pixels([image], processor.image_processor, seed=0, step=500)
    noised = dict(original, pixel_values=noise(original["pixel_values"]))
    views_match_alone(tiny_llava, VCD, image, prompt, {ORIGINAL: original, "noised": noised}, alpha=1.0)



def test_beam_search_through_the_engine(tiny_llava, images):
    beams = halluc.generate(tiny_llava, images, PROMPTS, "vcd", num_beams=3, max_new_tokens=4)
    again = halluc.generate(tiny_llava, images, PROMPTS, "vcd", num_beams=3, max_new_tokens=4)
    assert len(beams) == 2 and beams == again
