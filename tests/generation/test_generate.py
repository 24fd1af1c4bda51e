"""halluc.generate on every family's tiny model: batching, decoding modes, bad input."""
import pytest
import torch
from PIL import Image

import halluc
from halluc.errors import HallucError
from tests.conftest import FAMILIES

PROMPTS = ["What is in the image?", "Describe this picture in a few words please."]


@pytest.mark.parametrize("name", FAMILIES)
def test_each_family_generates_and_batch_equals_single(tiny_models, images, name):
    lvlm = tiny_models(name)
    batch = halluc.generate(lvlm, images, PROMPTS, max_new_tokens=6, return_scores=True)
    assert len(batch.texts) == 2 and all(len(t) == 6 or len(t) < 6 for t in batch.tokens)
    for row in range(2):
        single = halluc.generate(lvlm, [images[row]], [PROMPTS[row]], max_new_tokens=6, return_scores=True)
        assert single.tokens[0] == batch.tokens[row]
        steps = len(single.tokens[0])
        torch.testing.assert_close(single.scores[0, :steps], batch.scores[row, :steps], atol=1e-4, rtol=1e-4)


def test_sampling_is_seeded_and_leaves_global_rng_alone(tiny_llava, images):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = halluc.generate(tiny_llava, images, PROMPTS, do_sample=True, seed=7, max_new_tokens=8, temperature=1.5)
    b = halluc.generate(tiny_llava, images, PROMPTS, do_sample=True, seed=7, max_new_tokens=8, temperature=1.5)
    assert a == b
    assert torch.equal(torch.get_rng_state(), state)


def test_beam_search_runs(tiny_llava, images):
    texts = halluc.generate(tiny_llava, images, PROMPTS, num_beams=3, max_new_tokens=5)
    assert len(texts) == 2


def test_single_image_and_prompt_are_broadcast(tiny_llava, images):
    assert len(halluc.generate(tiny_llava, images[0], "What is it?", max_new_tokens=2)) == 1
    assert len(halluc.generate(tiny_llava, images[0], PROMPTS, max_new_tokens=2)) == 2


def test_pil_images_are_accepted(tiny_llava, images):
    with Image.open(images[0]) as img:
        assert halluc.generate(tiny_llava, [img], ["What?"], max_new_tokens=3) == \
            halluc.generate(tiny_llava, [images[0]], ["What?"], max_new_tokens=3)


@pytest.mark.parametrize("kwargs,message", [
    (dict(prompts=["  "]), "empty prompt"),
    (dict(prompts=["a", "b", "c"]), "got 2 images but 3 prompts"),
    (dict(method="vdc"), "unknown method 'vdc'"),
    (dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
    (dict(top_p=1.5, do_sample=True), r"top_p must be in \(0, 1\]"),
    (dict(temperature=0.0, do_sample=True), "temperature must be > 0"),
])
def test_bad_input_is_one_clear_error(tiny_llava, images, kwargs, message):
    args = {"prompts": PROMPTS, **kwargs}
    with pytest.raises(HallucError, match=message):
        halluc.generate(tiny_llava, images, **args)


def test_bad_image_files_are_named(tiny_llava, tmp_path):
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    with pytest.raises(HallucError, match="image not found: .*missing.png"):
        halluc.generate(tiny_llava, [tmp_path / "missing.png"], ["What?"])
    with pytest.raises(HallucError, match="not an image file .*notes.txt"):
        halluc.generate(tiny_llava, [not_image], ["What?"])


def test_unknown_model_lists_choices():
    with pytest.raises(HallucError, match="unknown model 'lava'.*choices: .*llava"):
        halluc.load("lava")


def test_unavailable_hub_model_says_how_to_provide_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(HallucError, match=r"cannot load model 'llava' \(llava-hf/llava-1.5-7b-hf\).*HF_HOME"):
        halluc.load("llava")


def test_local_directory_round_trip(tiny_llava, images, tmp_path):
    tiny_llava.model.save_pretrained(tmp_path)
    tiny_llava.processor.save_pretrained(tmp_path)
    reloaded = halluc.load(str(tmp_path), device="cpu")
    assert reloaded.family == "llava"
    assert halluc.generate(reloaded, images, PROMPTS, max_new_tokens=4) == \
        halluc.generate(tiny_llava, images, PROMPTS, max_new_tokens=4)
