"""The 2025 methods stacked pairwise (and with the older ones) on toy-llava: every pair runs with finite
scores in greedy decoding, or is refused in one line because both edit the attention of one layer."""
import itertools

import pytest

import halluc
from halluc.errors import HallucError
from halluc.world import render_scene, scene_at
from halluc.world.model import TRAIN_WORLD

NEW = ("only", "vaf", "memvr", "deco", "sid", "icd")
# toy-llava's 3 layers: VAF edits 0..1, ONLY layer 0, SID layers 1..2
SAME_LAYER = {("only", "vaf"): 0, ("vaf", "sid"): 1}


@pytest.fixture(scope="module")
def scene():
    return render_scene(scene_at(TRAIN_WORLD, "val", 4))


@pytest.mark.parametrize("pair", list(itertools.combinations(NEW, 2)), ids="+".join)
def test_every_pair_of_new_methods_stacks_or_is_refused_in_one_line(toy, scene, pair):
    call = lambda: halluc.generate(toy, [scene], ["Is there a cup in the image?"], list(pair),  # noqa: E731
                                   max_new_tokens=2, return_scores=True)
    if pair in SAME_LAYER:
        with pytest.raises(HallucError, match=f"both edit attention in layer {SAME_LAYER[pair]}"):
            call()
        return
    scores = call().scores
    assert not scores.isnan().any() and scores.isfinite().any(-1).all()


@pytest.mark.parametrize("method", NEW)
def test_each_stacks_with_vcd_and_vhr_under_beam_search(toy, scene, method):
    texts = halluc.generate(toy, [scene], ["Describe this image."], [method, "vhr", "vcd"], num_beams=2,
                            max_new_tokens=3)
    assert len(texts) == 1
