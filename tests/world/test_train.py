"""toy-llava training: deterministic from the seed, loss on answer tokens only, and it learns."""
from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from halluc.world import WorldConfig
from halluc.world.model import ToyModelConfig, load_toy_llava
from halluc.world.train import IGNORE, TrainRecipe, collate, lr_factor, samples, train

# 32 px images (4 x 4 patches), one-layer towers: a step takes milliseconds
MICRO = ToyModelConfig(world=WorldConfig(image_size=32, object_size=(0.45, 0.55), min_objects=1, max_objects=3),
                       vision_hidden=32, vision_layers=1, vision_heads=2, vision_mlp=64,
                       text_hidden=32, text_layers=1, text_heads=2, text_kv_heads=1, text_mlp=64, max_positions=64)
RECIPE = TrainRecipe(batch_size=8, lr=1e-2, warmup=2, vision_steps=3, vision_batch_size=4)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    return [train(MICRO, out / name, seed=3, steps=12, recipe=RECIPE, progress=False) for name in ("a", "b")]


def test_same_seed_gives_identical_weights_and_files(runs):
    a, b = runs
    assert a.losses == b.losses
    weights_a, weights_b = load_file(a.out_dir / "model.safetensors"), load_file(b.out_dir / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert (a.out_dir / "model.safetensors").read_bytes() == (b.out_dir / "model.safetensors").read_bytes()


def test_other_seed_gives_other_weights(runs, tmp_path):
    other = train(MICRO, None, seed=4, steps=1, recipe=RECIPE, progress=False)
    first = train(MICRO, None, seed=3, steps=1, recipe=RECIPE, progress=False)
    assert first.losses[0] == runs[0].losses[0]
    assert other.losses[0] != first.losses[0]


def test_loss_decreases(runs):
    losses = runs[0].losses
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


def test_output_directory_loads_offline_and_records_the_run(runs):
    out = runs[0].out_dir
    record = json.loads((out / "training.json").read_text())
    assert record["seed"] == 3 and record["steps"] == 12 and record["final_loss"] > 0
    model, processor = load_toy_llava(out)
    assert not model.training and model.dtype == torch.float32
    reloaded = model.state_dict()
    for name, tensor in runs[0].model.state_dict().items():
        assert torch.equal(reloaded[name], tensor), name


def test_labels_cover_only_the_answer_and_eos():
    batch_samples = [s for s, _ in zip(samples(MICRO, RECIPE, seed=0), range(6))]
    _, processor = load_toy_llava_processor()
    batch = collate(batch_samples, processor)
    tok = processor.tokenizer
    for ids, labels, s in zip(batch["input_ids"], batch["labels"], batch_samples):
        kept = labels[labels != IGNORE].tolist()
        assert tok.decode(kept[:-1]) == s.answer and kept[-1] == tok.eos_token_id
        assert (ids == tok.image_token_id).sum() == MICRO.image_tokens


def load_toy_llava_processor():
    from halluc.world.model import build_toy_llava
    return build_toy_llava(MICRO, seed=0)


def test_data_stream_is_a_pure_function_of_the_seed():
    first = [(s.prompt, s.answer, s.image.tobytes()) for s, _ in zip(samples(MICRO, RECIPE, 5), range(5))]
    random.seed(123)
    torch.manual_seed(123)
    again = [(s.prompt, s.answer, s.image.tobytes()) for s, _ in zip(samples(MICRO, RECIPE, 5), range(5))]
    assert first == again


def test_schedule_warms_up_then_decays_to_the_floor():
    recipe = TrainRecipe(warmup=10, min_lr_ratio=0.1)
    factors = [lr_factor(s, 100, recipe) for s in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    assert factors[100] == pytest.approx(0.1)


def test_cli_train_and_generate_data(tmp_path, monkeypatch):
    from halluc.world.cli import world_app

    runner = CliRunner()
    data = runner.invoke(world_app, ["generate-data", "--out", str(tmp_path / "val"), "-n", "3", "--min-objects", "3"])
    assert data.exit_code == 0, data.output
    assert (tmp_path / "val" / "instances.json").exists() and len(list((tmp_path / "val" / "images").iterdir())) == 3
    bad = runner.invoke(world_app, ["train", "--out", str(tmp_path / "m"), "--image-size", "20", "--no-progress"])
    assert bad.exit_code == 2 and "object" in bad.output
    negative = runner.invoke(world_app, ["train", "--out", str(tmp_path / "m"), "--vision-steps", "-1",
                                         "--no-progress"])
    assert negative.exit_code == 2 and "--vision-steps" in negative.output and not (tmp_path / "m").exists()


def test_on_step_reports_every_language_step():
    seen = []
    result = train(MICRO, None, seed=3, steps=3, recipe=RECIPE, progress=False,
                   on_step=lambda step, loss: seen.append((step, loss)))
    assert seen == list(enumerate(result.losses))
