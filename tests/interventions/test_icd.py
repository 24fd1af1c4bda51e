"""ICD: the disturbance as the contrast view's system prompt (or before the question), the contrast and
its cutoff; per-step logits on toy-llava against both prompts run by the plain model."""
import math

import pytest
import torch

import halluc
from halluc.engine.views import Branch, view_inputs
from halluc.errors import HallucError
from halluc.interventions.icd import DISTURBANCE, ICD, SCRIPT_DISTURBANCES
from halluc.world import render_scene, scene_at
from halluc.world.model import TRAIN_WORLD
from tests.helpers import PROMPTS, first_logits

STEPS = 5


@pytest.fixture(scope="module")
def scene():
    return render_scene(scene_at(TRAIN_WORLD, "val", 2))


def test_the_disturbed_prompt_replaces_the_system_prompt_or_precedes_the_question(tiny_llava):
    adapter, processor = tiny_llava.adapter, tiny_llava.processor
    (system,) = ICD().branches(None)
    assert system.system == DISTURBANCE == "You are a confused object detector."
    assert adapter.prompt(processor, "Is there a dog?", system=system.system) == \
        "You are a confused object detector. USER: <image>\nIs there a dog? ASSISTANT:"  # the code's llava_custom
    (instruction,) = ICD(placement="instruction").branches(None)
    assert instruction.prompt("Is there a dog?", 0) == f"{DISTURBANCE} Is there a dog?"
    assert len(SCRIPT_DISTURBANCES) == 5 and ICD().branches(None) and not ICD(alpha=0, beta=0).branches(None)
    with pytest.raises(HallucError, match="non-empty"):
        ICD(disturbance="  ")


def test_per_step_logits_match_a_literal_reading_of_the_code(toy, scene):
    """cd = (1+α)·z − α·z_d, −inf where z < log β + max z; z from the normal prompt, z_d from the disturbed one."""
    prompt = "Is there a cup in the image?"
    for mode in ({}, {"do_sample": True, "seed": 5}):
        got = halluc.generate(toy, [scene], [prompt], "icd", max_new_tokens=STEPS, return_scores=True, **mode)
        tokens = got.tokens[0]
        images = halluc.api.load_images([scene])
        normal = toy.adapter.build_inputs(toy.processor, images, [prompt])
        disturbed = view_inputs(toy.adapter, toy.processor, images, [prompt], Branch("d", system=DISTURBANCE))
        assert not torch.equal(normal["input_ids"], disturbed["input_ids"][:, -normal["input_ids"].shape[1]:])

        def logits(inputs, step):
            ids = torch.cat([inputs["input_ids"], torch.tensor([tokens[:step]], dtype=torch.long)], dim=1)
            with torch.no_grad():
                out = toy.model(**{**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)})
            return out.logits[0, -1].float()

        for step in range(len(tokens)):
            z, z_d = logits(normal, step), logits(disturbed, step)
            cd = (2 * z - z_d).masked_fill(z < math.log(0.1) + z.max(), -math.inf)
            torch.testing.assert_close(got.scores[0, step].log_softmax(-1), cd.log_softmax(-1), atol=1e-4, rtol=1e-4)


def test_zero_is_the_identity_and_the_contrast_acts(tiny_llava, images):
    vanilla = first_logits(tiny_llava, images)
    assert torch.equal(first_logits(tiny_llava, images, "icd", **ICD.zero_params), vanilla)
    assert not torch.allclose(first_logits(tiny_llava, images, "icd", beta=0.0).log_softmax(-1),
                              vanilla.log_softmax(-1), atol=1e-4)


@pytest.mark.parametrize("other", ["vcd", "pai", "vhr", "vista"])
def test_stacks_with_in_model_and_decoding_methods(tiny_llava, images, other):
    scores = halluc.generate(tiny_llava, images, PROMPTS, ["icd", other], max_new_tokens=3, return_scores=True).scores
    assert not scores.isnan().any()
