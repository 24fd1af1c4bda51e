"""ClearSight / VAF: pre-softmax scaling of image and system scores for the rows after the image, in the
middle layers; per-step logits on toy-llava against a hand-written forward."""
import pytest
import torch

import halluc
from halluc.errors import HallucError
from halluc.interventions.vaf import VAF, rows_after_image, score_scale
from halluc.world import render_scene, scene_at
from halluc.world.model import TRAIN_WORLD
from tests.helpers import PROMPTS, first_logits
from tests.interventions.manual_lm import Edits, ManualLM

STEPS = 6


@pytest.fixture(scope="module")
def scene():
    return render_scene(scene_at(TRAIN_WORLD, "val", 3))


def test_scale_and_rows_on_hand_made_masks():
    image = torch.tensor([[False, False, True, True, False], [False, True, True, False, False]])
    system = torch.tensor([[True, True, False, False, False], [True, False, False, False, False]])
    scale = score_scale(image, system, 1.15, 0.95)
    torch.testing.assert_close(scale, torch.tensor([[0.95, 0.95, 1.15, 1.15, 1.0], [0.95, 1.15, 1.15, 1.0, 1.0]]))
    assert rows_after_image(image).tolist() == [4, 3]
    assert rows_after_image(torch.zeros(1, 5, dtype=torch.bool)).tolist() == [5]  # no image: no prefill row


def test_default_band_is_9_to_14_of_32_scaled_by_depth():
    assert VAF().chosen_layers(32) == tuple(range(9, 15))
    assert VAF().chosen_layers(28) == tuple(range(7, 13))
    assert VAF().chosen_layers(3) == (0, 1) and VAF().chosen_layers(2) == (0,)
    assert VAF(layers=[1]).chosen_layers(2) == (1,)
    with pytest.raises(HallucError, match="layer 5 does not exist"):
        VAF(layers=[5]).chosen_layers(2)
    with pytest.raises(HallucError):
        VAF(enhance=0.0)


def test_per_step_logits_match_a_literal_reading_of_the_code(toy, scene):
    """The code: S[:, :, r, img] *= 1.15 and S[:, :, r, sys] *= 0.95 on q·kᵀ/√d before the mask, for the
    rows r after the image at prefill and every decode row, in layers 9..14 of 32 (0..1 of toy-llava's 3)."""
    prompt = "Describe this image."
    got = halluc.generate(toy, [scene], [prompt], "vaf", max_new_tokens=STEPS, return_scores=True)
    inputs = toy.adapter.build_inputs(toy.processor, [scene], [prompt])
    ids = inputs["input_ids"][0]
    image = ids == toy.model.config.image_token_id
    first, end = image.nonzero()[0, 0], image.nonzero()[-1, 0] + 1
    system = torch.arange(len(ids)) < first  # BOS and everything the template puts before the image
    assert toy.processor.tokenizer.decode(ids[system]).replace(" ", "") == "<s>USER:"

    def scores(layer, s, query_positions):
        if layer not in (0, 1):
            return s
        factor = torch.ones(s.shape[-1])
        factor[:len(ids)][image] = 1.15
        factor[:len(ids)][system] = 0.95
        after = (query_positions >= end)[None, None, :, None]
        return torch.where(after, s * factor, s)

    manual = ManualLM(toy)
    hidden = manual.forward(manual.embeddings(inputs), Edits(scores=scores))
    for step in range(len(got.tokens[0])):
        logits = manual.logits(hidden)
        torch.testing.assert_close(got.scores[0, step], logits[0], atol=1e-4, rtol=1e-4)
        hidden = manual.forward(manual.token_embedding(got.tokens[0][step]), Edits(scores=scores))
    plain = halluc.generate(toy, [scene], [prompt], max_new_tokens=1, return_scores=True).scores[0, 0]
    assert not torch.allclose(got.scores[0, 0], plain, atol=1e-3)


def test_each_factor_acts_alone_and_one_is_the_identity(tiny_llava, images):
    vanilla = first_logits(tiny_llava, images)
    assert torch.equal(first_logits(tiny_llava, images, "vaf", enhance=1.0, suppress=1.0), vanilla)
    assert not torch.allclose(first_logits(tiny_llava, images, "vaf", suppress=1.0), vanilla)
    assert not torch.allclose(first_logits(tiny_llava, images, "vaf", enhance=1.0), vanilla)


@pytest.mark.parametrize("other", ["vcd", "vhr", "vista"])
def test_stacks_with_in_model_and_decoding_methods(tiny_llava, images, other):
    texts = halluc.generate(tiny_llava, images, PROMPTS, ["vaf", other], max_new_tokens=3)
    assert len(texts) == 2
