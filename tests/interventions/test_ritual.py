"""RITUAL and RITUAL + VCD (stacked): the transformation pool, the formulas, per-view caches.

The contract (identity, no leftovers, batch == single, modes, families): `test_contract.py`."""
import math
from collections import Counter

import pytest
import torch
from PIL import Image, ImageOps

import halluc
from halluc.engine.combine import BranchCombiner, Combination
from halluc.engine.image_views import TRANSFORMS, random_transform
from halluc.engine.views import ORIGINAL
from halluc.images import load_image
from halluc.interventions.ritual import RITUAL
from halluc.interventions.vcd import VCD
from tests.helpers import combiner_for, views_match_alone

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
    out = combiner_for(ritual, ["transformed"])(
        None, torch.cat([original, transformed]))
    torch.testing.assert_close(out[:1], (lo + 3 * lt).masked_fill(cut, -math.inf))
    assert out[0].argmax() == 1  # the transformed view supports token 1: complementary, not contrastive
    vcd = VCD(alpha=1.0, beta=0.5)  # RITUAL then VCD, stacked as `ritual-vcd` does
    stack = [Combination("ritual", {"transformed": "r"}, ritual.combine, ritual.plausibility_cutoff()),
             Combination("vcd", {"noised": "v"}, vcd.combine, vcd.plausibility_cutoff())]
    out = BranchCombiner([ORIGINAL, "r", "v"], stack)(None, torch.cat([original, transformed, noised]))
    torch.testing.assert_close(out[2:], (2 * lo - ln + 3 * lt).masked_fill(cut, -math.inf))




def test_every_view_keeps_its_own_cache(tiny_llava, images):
    image, prompt = load_image(images[0]), PROMPTS[0]
    adapter, processor = tiny_llava.adapter, tiny_llava.processor
    original = adapter.build_inputs(processor, [image], [prompt])
    transformed = adapter.build_inputs(processor, [random_transform(image, 0)[1]], [prompt])
    views_match_alone(tiny_llava, RITUAL, image, prompt, {ORIGINAL: original, "transformed": transformed})



def test_beam_search_through_the_engine(tiny_llava, images):
    for method in ("ritual", "ritual-vcd", ["ritual", "vcd"]):
        assert len(halluc.generate(tiny_llava, images, PROMPTS, method, num_beams=3, max_new_tokens=4)) == 2
