"""toy-llava: stock classes, the word tokenizer, and the shipped weights (offline; they see what is clearly there)."""
from __future__ import annotations

import random

import pytest
import torch

from halluc.modeling.llava import LLAVA
from halluc.world import NAMES, caption, question, render_scene, scene_at
from halluc.world.benchmark import eval_config
from halluc.world.model import (
    SHIPPED,
    TRAIN_WORLD,
    ToyModelConfig,
    build_toy_llava,
    load_toy_llava,
    vocabulary,
    word_tokenizer,
)

SUFFIX = "\nAnswer the question using a single word or phrase."


@pytest.fixture(scope="module")
def shipped():
    return load_toy_llava()


def test_every_caption_and_question_tokenizes_to_known_words_and_round_trips():
    tok = word_tokenizer()
    rng = random.Random(0)
    for i in range(60):
        scene = scene_at(TRAIN_WORLD, "train", i)
        text = caption(scene, rng, 0.0)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids and tok.decode(ids) == text
    for name in NAMES:
        ids = tok(question(name) + SUFFIX, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
    assert len(tok) == 5 + len(vocabulary()) < 300


def test_build_uses_stock_classes_and_the_halluc_backend():
    model, processor = build_toy_llava(ToyModelConfig(), seed=1)
    again, _ = build_toy_llava(ToyModelConfig(), seed=1)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert type(processor).__name__ == "LlavaProcessor"
    assert model.config.text_config._attn_implementation == "halluc"
    assert model.config.vision_config._attn_implementation == "sdpa"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    prompt = LLAVA.adapter.prompt(processor, "Is there a cup in the image?")
    assert prompt == "USER: <image>\nIs there a cup in the image? ASSISTANT:"
    image = render_scene(scene_at(TRAIN_WORLD, "val", 0))
    inputs = LLAVA.adapter.build_inputs(processor, [image], ["Describe this image."])
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == ToyModelConfig().image_tokens == 64
    assert inputs["pixel_values"].shape == (1, 3, 64, 64)


def test_shipped_files_are_small_and_load_offline(shipped, monkeypatch):
    size = sum(p.stat().st_size for p in SHIPPED.iterdir() if p.is_file())
    assert size <= 25 * 2**20
    model, processor = shipped
    assert not model.training and model.dtype == torch.float32
    assert model.config.text_config._attn_implementation == "halluc"
    assert processor.tokenizer.image_token == "<image>"


def _scenes(n: int):
    config = eval_config(TRAIN_WORLD)
    return [scene_at(config, "test", i) for i in range(n)]   # never seen in training or in the val benchmark


@torch.no_grad()
def _answers(shipped, images, prompts) -> list[str]:
    model, processor = shipped
    inputs = LLAVA.adapter.build_inputs(processor, images, prompts)
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    return processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_says_yes_to_clearly_visible_objects(shipped):
    rng = random.Random(0)
    images, prompts = [], []
    for scene in _scenes(40):
        clear = [o.category for o in scene.objects if o.visibility >= 0.8]
        images.append(render_scene(scene))
        prompts.append(question(rng.choice(clear)) + SUFFIX)
    answers = _answers(shipped, images, prompts)
    assert set(answers) <= {"Yes", "No"}
    assert sum(a == "Yes" for a in answers) / len(answers) >= 0.8


def test_says_no_to_random_absent_objects(shipped):
    rng = random.Random(1)
    images, prompts = [], []
    for scene in _scenes(40):
        absent = [n for n in NAMES if n not in {o.category for o in scene.objects}]
        images.append(render_scene(scene))
        prompts.append(question(rng.choice(absent)) + SUFFIX)
    answers = _answers(shipped, images, prompts)
    assert sum(a == "No" for a in answers) / len(answers) >= 0.75


def test_captions_name_objects_in_the_world_grammar(shipped):
    model, processor = shipped
    scenes = _scenes(4)
    inputs = LLAVA.adapter.build_inputs(processor, [render_scene(s) for s in scenes],
                                ["Please describe this image in detail."] * len(scenes))
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    texts = processor.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    from halluc.world import parse_caption
    for text in texts:
        assert text.endswith(".") and sum(parse_caption(text).values()) >= 1


def test_hallucinates_absent_companions_of_the_scene(shipped):
    """The co-occurrence bias the toy world is built to produce: absent objects of the scene's own prior
    get "Yes" far more often than absent objects from elsewhere (POPE adversarial vs random)."""
    from halluc.world import SCENE_PRIORS

    rng = random.Random(2)
    images, companions, strangers = [], [], []
    for scene in _scenes(60):
        present = {o.category for o in scene.objects}
        prior = [n for n in SCENE_PRIORS[scene.kind] if n not in present]
        if not prior:
            continue
        images.append(render_scene(scene))
        companions.append(question(rng.choice(prior)) + SUFFIX)
        strangers.append(question(rng.choice([n for n in NAMES if n not in present and n not in prior])) + SUFFIX)
    yes_companion = sum(a == "Yes" for a in _answers(shipped, images, companions)) / len(images)
    yes_stranger = sum(a == "Yes" for a in _answers(shipped, images, strangers)) / len(images)
    assert yes_companion >= yes_stranger + 0.1 and yes_stranger <= 0.15


def test_shipped_weights_come_from_the_default_training_command():
    """`halluc world train --out halluc/world/toy_llava` with today's defaults is what produced them:
    a change to the recipe, the model config or the world must come with retrained weights."""
    import json
    from dataclasses import asdict

    from halluc.world.coco import WORLD_VERSION
    from halluc.world.train import DEFAULT_STEPS, TrainRecipe

    record = json.loads((SHIPPED / "training.json").read_text())
    assert record["seed"] == 0 and record["steps"] == DEFAULT_STEPS
    assert record["world_version"] == WORLD_VERSION
    assert record["recipe"] == json.loads(json.dumps(asdict(TrainRecipe())))
    assert record["config"] == json.loads(json.dumps(ToyModelConfig().as_dict()))
