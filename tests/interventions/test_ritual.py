"""RITUAL and RITUAL+VCD: the transformation pool, the formulas, identity, per-view caches, every family."""
import math
from collections import Counter

import pytest
import torch
from PIL import Image, ImageOps

import halluc
from halluc.decoding.branches import ORIGINAL, BranchCombiner
from halluc.decoding.image_views import TRANSFORMS, noised_pixels, random_transform
from halluc.images import load_image
from halluc.interventions.ritual import RITUAL, RitualVCD
from halluc.kernels.backend import current_edits
from tests.conftest import FAMILIES
from tests.interventions.test_vcd import hook_count, views_match_alone

PROMPTS = ["What is in the image?", "Describe it."]


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A small image with structure in both directions (a gradient and an off-centre square)."""
    img = Image.linear_gradient("L").resize((48, 40)).convert("RGB")
    img.paste((250, 20, 20), (4, 6, 16, 14))
    return img


def test_each_transformation_does_what_torchvision_does(photo):
    import random
    rng = random.Random(0)
    assert TRANSFORMS["hflip"](photo, rng).tobytes() == ImageOps.mirror(photo).tobytes()
    assert TRANSFORMS["vflip"](photo, rng).tobytes() == ImageOps.flip(photo).tobytes()
    rotated = TRANSFORMS["rotate"](photo, random.Random(1))
    assert rotated.size == photo.size and rotated.getpixel((0, 0)) == (0, 0, 0)  # black fill in the corners
    assert TRANSFORMS["crop"](photo, random.Random(2)).size == (336, 336)
    for name in ("color", "blur"):
        out = TRANSFORMS[name](photo, random.Random(3))
        assert out.size == photo.size and out.tobytes() != photo.tobytes()


def test_one_transformation_per_image_drawn_from_seed_and_content(photo):
    name, view = random_transform(photo, seed=0)
    again = random_transform(photo, seed=0)
    assert name == again[0] and view.tobytes() == again[1].tobytes()  # deterministic
    drawn = Counter(random_transform(photo, seed=s)[0] for s in range(120))
    assert set(drawn) == set(TRANSFORMS) and max(drawn.values()) < 40  # uniform over the six
    other = photo.copy()
    other.putpixel((0, 0), (1, 2, 3))
    assert [random_transform(photo, s)[0] for s in range(8)] != [random_transform(other, s)[0] for s in range(8)]


def test_formulas_and_cutoff_on_planted_log_probs():
    original = torch.tensor([[2.0, 1.9, 0.0, -1.0]])
    transformed = torch.tensor([[0.0, 3.0, 0.0, 0.0]])
    noised = torch.tensor([[0.0, 2.5, 1.0, 0.0]])
    lo, lt, ln = (x.log_softmax(-1) for x in (original, transformed, noised))
    cut = lo < lo.max() + math.log(0.5)
    ritual = RITUAL(alpha=3.0, beta=0.5)
    out = BranchCombiner([ORIGINAL, "transformed"], ritual.combine, ritual.plausibility())(
        None, torch.cat([original, transformed]))
    torch.testing.assert_close(out[:1], (lo + 3 * lt).masked_fill(cut, -math.inf))
    assert out[0].argmax() == 1  # the transformed view supports token 1: complementary, not contrastive
    both = RitualVCD(alpha=3.0, vcd_alpha=1.0, beta=0.5)
    out = BranchCombiner([ORIGINAL, "transformed", "noised"], both.combine, both.plausibility())(
        None, torch.cat([original, transformed, noised]))
    torch.testing.assert_close(out[2:], (2 * lo - ln + 3 * lt).masked_fill(cut, -math.inf))


def test_zero_strength_is_bit_identical(tiny_llava, images):
    vanilla = halluc.generate(tiny_llava, images, PROMPTS, max_new_tokens=4, return_scores=True)
    for method, zero in (("ritual", dict(alpha=0.0)), ("ritual-vcd", dict(alpha=0.0, vcd_alpha=0.0))):
        same = halluc.generate(tiny_llava, images, PROMPTS, method, beta=0.0, max_new_tokens=4, return_scores=True,
                               **zero)
        assert same.tokens == vanilla.tokens and torch.equal(same.scores, vanilla.scores)
        engine = halluc.generate(tiny_llava, images, PROMPTS, method, beta=1e-9, max_new_tokens=4, **zero)
        assert engine == vanilla.texts  # the extra rows run, the combination is the original view alone


def test_no_hooks_or_edits_left_after_the_call_or_an_error(tiny_llava, images, monkeypatch):
    before = hook_count(tiny_llava.model)
    halluc.generate(tiny_llava, images, PROMPTS, "ritual-vcd", max_new_tokens=2)
    assert hook_count(tiny_llava.model) == before and dict(current_edits()) == {}
    monkeypatch.setattr(tiny_llava.model, "generate", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        halluc.generate(tiny_llava, images, PROMPTS, "ritual")
    assert hook_count(tiny_llava.model) == before and dict(current_edits()) == {}


def test_every_view_keeps_its_own_cache(tiny_llava, images):
    image, prompt = load_image(images[0]), PROMPTS[0]
    adapter, processor = tiny_llava.adapter, tiny_llava.processor
    original = adapter.build_inputs(processor, [image], [prompt])
    transformed = adapter.build_inputs(processor, [random_transform(image, 0)[1]], [prompt])
    views_match_alone(tiny_llava, RITUAL, image, prompt, {ORIGINAL: original, "transformed": transformed})
    noise = noised_pixels([image], processor.image_processor, seed=0, step=500)
    noised = dict(original, pixel_values=noise(original["pixel_values"]))
    views_match_alone(tiny_llava, RitualVCD, image, prompt,
                      {ORIGINAL: original, "transformed": transformed, "noised": noised})


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_and_sampling_on_every_family_and_batch_equals_single(tiny_models, images, name):
    lvlm = tiny_models(name)
    batch = halluc.generate(lvlm, images, PROMPTS, "ritual", max_new_tokens=4)
    assert batch == [halluc.generate(lvlm, [images[i]], [PROMPTS[i]], "ritual", max_new_tokens=4)[0] for i in range(2)]
    assert len(halluc.generate(lvlm, images, PROMPTS, "ritual", do_sample=True, seed=3, max_new_tokens=4)) == 2
    assert len(halluc.generate(lvlm, images, PROMPTS, "ritual-vcd", max_new_tokens=4)) == 2


def test_beam_search_through_the_engine(tiny_llava, images):
    for method in ("ritual", "ritual-vcd"):
        assert len(halluc.generate(tiny_llava, images, PROMPTS, method, num_beams=3, max_new_tokens=4)) == 2
