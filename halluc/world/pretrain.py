"""Stage 1 of toy-llava training: pretrain its ViT to tell what covers each patch.

Real LLaVA starts from a pretrained CLIP and keeps it frozen. toy-llava has no CLIP to start from, and
a ViT trained from scratch only through the LM's answer loss (one bit per yes/no question) learns the
scene type from the background and little else: the LM then answers from priors alone. So the tower
is first trained on dense labels the generator knows exactly:

    target[patch, c] = fraction of the patch's pixels showing category c   (visible pixels only)
    target[patch, background of the scene type] = the rest
    loss = cross-entropy(linear_head(vit_hidden[feature_layer][patch]), target)

The head is thrown away; the LM stage reads the same layer (`vision_feature_layer`).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from halluc.world.scenes import SCENE_TYPES, Scene, WorldConfig, render_scene, scene_at, visible_masks
from halluc.world.vocab import NAMES

CLASSES: tuple[str, ...] = (*NAMES, *(f"background:{kind}" for kind in SCENE_TYPES))
SCENE_OFFSET = 10_000_000   # train-split scene indices of stage 1, disjoint from the LM stage's


def patch_targets(scene: Scene, patch: int) -> np.ndarray:
    """(grid*grid, len(CLASSES)) float32: each row is a distribution over what the patch shows."""
    grid = scene.size // patch
    target = np.zeros((len(CLASSES), grid, grid), np.float32)
    for obj, mask in zip(scene.objects, visible_masks(scene)):
        target[NAMES.index(obj.category)] += mask.reshape(grid, patch, grid, patch).mean((1, 3))
    covered = target[:len(NAMES)].sum(0).clip(0, 1)
    target[len(NAMES) + SCENE_TYPES.index(scene.kind)] = 1 - covered
    return target.reshape(len(CLASSES), grid * grid).T


def patch_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy, mean over patches. logits, targets: (B, P, C)."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def pretrain_vision(model, processor, world: WorldConfig, patch: int, steps: int, batch_size: int, lr: float,
                    seed: int, on_step: Callable[[int, float], None]) -> list[float]:
    """Train `model`'s vision tower in place for `steps` steps; returns the per-step losses.

    Scenes are train scenes SCENE_OFFSET + k; the head's init comes from `seed` (global RNG untouched).
    """
    if steps == 0:
        return []
    tower = model.model.vision_tower
    layer = model.config.vision_feature_layer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = torch.nn.Linear(tower.config.hidden_size, len(CLASSES))
    params = [*tower.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.05, betas=(0.9, 0.98))
    # its own schedule (not the language stage's `lr_factor`): warm-up over the first 10% of the steps,
    # multiplied by a cosine from 1 to 0.1 over all of them
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * s / steps))))
    losses = []
    for step in range(steps):
        scenes = [scene_at(world, "train", SCENE_OFFSET + step * batch_size + i) for i in range(batch_size)]
        pixels = processor.image_processor([render_scene(s) for s in scenes], return_tensors="pt")["pixel_values"]
        targets = torch.from_numpy(np.stack([patch_targets(s, patch) for s in scenes]))    # (B, P, C)
        hidden = tower(pixels, output_hidden_states=True).hidden_states[layer][:, 1:]      # (B, P, D), no CLS
        losses.append(optimise(patch_loss(head(hidden), targets), params, optimizer, schedule))
        on_step(step, losses[-1])
    return losses


def optimise(loss: torch.Tensor, params: list[torch.Tensor], optimizer, schedule) -> float:
    """One step of both training stages: backward, clip the gradient norm to 1, step, advance the
    schedule, clear the gradients. Returns the loss."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()
