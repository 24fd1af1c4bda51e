"""Stage 1 of toy-llava training: per-patch labels, their loss, and a frozen tower afterwards."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from halluc.world.model import build_toy_llava
from halluc.world.pretrain import CLASSES, patch_loss, patch_targets, pretrain_vision
from halluc.world.scenes import SCENE_TYPES, scene_at, visible_masks
from halluc.world.train import train
from halluc.world.vocab import NAMES
from tests.world.test_train import MICRO, RECIPE


def test_patch_targets_are_distributions_over_what_each_patch_shows():
    scene = scene_at(MICRO.world, "train", 5)
    targets = patch_targets(scene, MICRO.patch_size)
    grid = MICRO.world.image_size // MICRO.patch_size
    assert targets.shape == (grid * grid, len(CLASSES))
    assert np.allclose(targets.sum(1), 1, atol=1e-5) and (targets >= 0).all()
    background = len(NAMES) + SCENE_TYPES.index(scene.kind)
    others = [len(NAMES) + i for i, kind in enumerate(SCENE_TYPES) if kind != scene.kind]
    assert targets[:, others].sum() == 0 and targets[:, background].max() > 0
    for obj, mask in zip(scene.objects, visible_masks(scene)):   # each object's mass = its visible pixels
        mass = targets[:, NAMES.index(obj.category)].sum() * MICRO.patch_size ** 2
        same = sum(m.sum() for o, m in zip(scene.objects, visible_masks(scene)) if o.category == obj.category)
        assert mass == pytest.approx(same, rel=1e-4)


def test_patch_loss_is_soft_cross_entropy_averaged_over_patches():
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])                 # (B=1, P=2, C=2)
    targets = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    first = np.log(2)                                                  # uniform prediction, one-hot target
    second = -(0.5 * np.log(np.exp(2) / (np.exp(2) + 1)) + 0.5 * np.log(1 / (np.exp(2) + 1)))
    assert patch_loss(logits, targets).item() == pytest.approx((first + second) / 2, rel=1e-6)


def _pretrained(seed: int):
    model, processor = build_toy_llava(MICRO, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = pretrain_vision(model, processor, MICRO.world, MICRO.patch_size, steps=6, batch_size=4, lr=3e-3,
                             seed=seed, on_step=lambda step, loss: None)
    return model, before, losses


def test_pretraining_moves_only_the_vision_tower_and_is_deterministic():
    model, before, losses = _pretrained(seed=0)
    again, _, losses_again = _pretrained(seed=0)
    assert losses == losses_again and len(losses) == 6
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    assert any(not torch.equal(t, before[n]) for n, t in model.state_dict().items() if "vision_tower" in n)
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items() if "vision_tower" not in n)


def test_zero_steps_is_a_no_op():
    model, processor = build_toy_llava(MICRO, seed=1)
    quiet = lambda step, loss: None  # noqa: E731
    assert pretrain_vision(model, processor, MICRO.world, MICRO.patch_size, 0, 4, 1e-3, 0, quiet) == []


def test_language_stage_keeps_the_pretrained_tower_frozen():
    short, long = (train(MICRO, None, seed=3, steps=n, recipe=RECIPE, progress=False) for n in (1, 4))
    initial = build_toy_llava(MICRO, seed=3)[0].model.vision_tower.state_dict()
    tower = long.model.model.vision_tower.state_dict()
    for name, tensor in short.model.model.vision_tower.state_dict().items():
        assert torch.equal(tensor, tower[name]), name          # language steps never touch it
    assert not torch.equal(tower["embeddings.patch_embedding.weight"], initial["embeddings.patch_embedding.weight"])
    assert not torch.equal(short.model.lm_head.weight, long.model.lm_head.weight)
    assert len(long.vision_losses) == RECIPE.vision_steps
    assert all(p.requires_grad for p in long.model.parameters())   # handed back fully trainable
