"""Train toy-llava on the toy world's train split, deterministically, on CPU in well under an hour.

Data is generated on the fly, one fresh scene per sample (`scene_at(world, "train", k)`), each asked
one of two things:
  * a caption: "Please describe this image in detail." (or a short variant) -> the world's caption,
    which names every object at least `caption_min_visibility` visible;
  * a yes/no question, "Is there a {obj} in the image?" with no suffix or one of the POPE protocols'
    suffixes -> "Yes" / "No" (`halluc.world.qa.yes_no_pairs`).
The loss is on the answer tokens (and </s>) only. AdamW, linear warm-up, cosine decay to 10%.

Where the hallucination comes from. `prior_negative_rate` is small: the "No" questions of training
mostly name objects that do not belong to the scene type, so "this is a kitchen" alone predicts most
answers. The model learns that shortcut early and checks the pixels only partly, so it says "Yes" to
absent objects the scene usually has (POPE adversarial / popular) and names them in captions (CHAIR),
while answering random absent objects and clearly visible ones correctly.

    result = train(ToyModelConfig(), "out/toy_llava", seed=0)       # what `halluc world train` runs
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from halluc.world.captions import caption
from halluc.world.model import CAPTION_PROMPTS, QUESTION_SUFFIXES, ToyModelConfig, build_toy_llava, parameter_count
from halluc.world.qa import yes_no_pairs
from halluc.world.scenes import render_scene, scene_at

IGNORE = -100


@dataclass(frozen=True)
class TrainRecipe:
    """Optimiser and data mix. Defaults are what the shipped weights were trained with.

    Args:
        batch_size: samples (= scenes) per step.
        lr, weight_decay, warmup, min_lr_ratio: AdamW; linear warm-up for `warmup` steps, then cosine
            decay to `min_lr_ratio * lr`.
        caption_rate: fraction of samples that are captions; the rest are yes/no questions.
        detail_prompt_rate: fraction of captions asked with "Please describe this image in detail."
            (CHAIR's prompt); the others use a short variant.
        prior_negative_rate: of the "No" questions, the fraction naming an absent object of the scene's
            own prior (`yes_no_pairs`); 0 leaves the prior unchallenged, 0.5+ teaches to check the image.
        threads: torch CPU threads. Results are bit-identical only for the same value; 1 is also the
            fastest choice on a busy machine (idle threads of a shared BLAS pool spin and stall).
    """
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 60
    min_lr_ratio: float = 0.1
    caption_rate: float = 0.4
    detail_prompt_rate: float = 0.7
    prior_negative_rate: float = 0.15
    threads: int = 1

    def __post_init__(self):
        for name in ("caption_rate", "detail_prompt_rate", "prior_negative_rate", "min_lr_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.batch_size < 1 or self.lr <= 0 or self.warmup < 0 or self.threads < 1:
            raise ValueError("batch_size and threads must be >= 1, lr > 0 and warmup >= 0")


DEFAULT_STEPS = 1200


@dataclass
class TrainResult:
    out_dir: Path | None
    steps: int
    seed: int
    seconds: float
    final_loss: float          # mean loss of the last 10% of steps
    losses: list[float] = field(repr=False, default_factory=list)   # per step
    parameters: int = 0
    model: Any = field(default=None, repr=False)       # the trained model (eval mode) and its processor,
    processor: Any = field(default=None, repr=False)   # for callers that evaluate right away


# ---------------------------------------------------------------- data

@dataclass(frozen=True)
class Sample:
    image: Any      # PIL RGB
    prompt: str     # user text, before the chat template
    answer: str


def samples(config: ToyModelConfig, recipe: TrainRecipe, seed: int, start: int = 0) -> Iterator[Sample]:
    """Sample k uses train scene `start + k` and a choice drawn from `random.Random(seed)`'s stream."""
    rng = random.Random(seed)
    world = config.world
    index = start
    while True:
        scene = scene_at(world, "train", index)
        index += 1
        if rng.random() < recipe.caption_rate:
            prompt = CAPTION_PROMPTS[0] if rng.random() < recipe.detail_prompt_rate else rng.choice(CAPTION_PROMPTS[1:])
            answer = caption(scene, rng, world.caption_min_visibility)
        else:
            pairs = yes_no_pairs(scene, rng, world, prior_negative_rate=recipe.prior_negative_rate)
            pair = rng.choice(pairs)
            prompt, answer = pair.question + rng.choice(QUESTION_SUFFIXES), pair.answer
        yield Sample(render_scene(scene), prompt, answer)


def collate(batch: list[Sample], processor: Any) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask / labels (answer + </s> only) and pixel_values."""
    tok = processor.tokenizer
    prompts = [_chat_prompt(processor, s.prompt) for s in batch]
    enc = processor(text=prompts, images=[s.image for s in batch], return_tensors="pt", padding=True)
    rows, labels = [], []
    for ids, keep, s in zip(enc["input_ids"], enc["attention_mask"], batch):
        ids = ids[keep.bool()].tolist()
        answer = tok(" " + s.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append(ids + answer)
        labels.append([IGNORE] * len(ids) + answer)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    label_ids = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        input_ids[i, :len(r)] = torch.tensor(r)
        label_ids[i, :len(lab)] = torch.tensor(lab)
        mask[i, :len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": label_ids, "pixel_values": enc["pixel_values"]}


def _chat_prompt(processor: Any, text: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


# ---------------------------------------------------------------- training

def lr_factor(step: int, steps: int, recipe: TrainRecipe) -> float:
    """Linear warm-up to 1, then cosine to `min_lr_ratio` at the last step."""
    if step < recipe.warmup:
        return (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, steps - recipe.warmup)
    return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(config: ToyModelConfig = ToyModelConfig(), out_dir: str | Path | None = None, seed: int = 0,
          steps: int = DEFAULT_STEPS, recipe: TrainRecipe = TrainRecipe(), progress: bool = True,
          on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train toy-llava from scratch; write a `save_pretrained` directory to `out_dir` (if given).

    Same (config, seed, steps, recipe, torch version, CPU) -> bit-identical weights: weights come from
    `seed`, data from `random.Random(seed)`, one thread setting, deterministic torch algorithms.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(recipe.threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _train(config, out_dir, seed, steps, recipe, progress, on_step)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _train(config: ToyModelConfig, out_dir, seed: int, steps: int, recipe: TrainRecipe, progress: bool,
           on_step: Callable[[int, float], None] | None) -> TrainResult:
    model, processor = build_toy_llava(config, seed)
    optimizer = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, recipe))
    data = samples(config, recipe, seed)
    losses: list[float] = []
    start = time.monotonic()
    with _progress(steps, progress) as advance:
        for step in range(steps):
            batch = collate([next(data) for _ in range(recipe.batch_size)], processor)
            loss = answer_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            advance(losses[-1])
            if on_step is not None:
                on_step(step, losses[-1])
    seconds = time.monotonic() - start
    tail = losses[-max(1, steps // 10):]
    result = TrainResult(Path(out_dir) if out_dir else None, steps, seed, seconds, float(np.mean(tail)), losses,
                         parameter_count(model), model.eval(), processor)
    if out_dir is not None:
        save(model, processor, result, config, recipe)
    return result


def answer_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy on the answer tokens, averaged per sample, then over the batch: a one-word
    answer weighs as much as a caption (a token mean would hand captions ~90% of the gradient)."""
    labels = batch["labels"][:, 1:]                                            # (B, T-1)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=0).logits[:, :-1]                  # (B, T-1, V)
    tokens = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
    mask = (labels != IGNORE).float()
    return ((tokens * mask).sum(1) / mask.sum(1)).mean()


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, rest = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embed" not in name else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def save(model: Any, processor: Any, result: TrainResult, config: ToyModelConfig, recipe: TrainRecipe) -> None:
    out = Path(result.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    every = max(1, result.steps // 50)
    record = {
        "command": f"halluc world train --out {out} --seed {result.seed} --steps {result.steps}",
        "seed": result.seed, "steps": result.steps, "seconds": round(result.seconds, 1),
        "final_loss": round(result.final_loss, 4), "parameters": result.parameters,
        "torch": torch.__version__, "threads": recipe.threads, "platform": sys.platform, "cpus": os.cpu_count(),
        "config": asdict(config), "recipe": asdict(recipe),
        "loss_curve": {str(i): round(result.losses[i], 4) for i in range(0, result.steps, every)},
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


class _progress:
    """A rich progress bar with loss, ETA and elapsed time on stderr (off when HALLUC_PROGRESS=0)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled and os.environ.get("HALLUC_PROGRESS", "1") != "0"

    def __enter__(self):
        if not self.enabled:
            return lambda loss: None
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.bar = Progress(TextColumn("train toy-llava"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}"), TextColumn("ETA"), TimeRemainingColumn(),
                            TimeElapsedColumn(), console=Console(file=sys.stderr))
        self.bar.__enter__()
        task = self.bar.add_task("train", total=self.total, loss="-")
        self.smooth = None

        def advance(loss: float) -> None:
            self.smooth = loss if self.smooth is None else 0.95 * self.smooth + 0.05 * loss
            self.bar.update(task, advance=1, loss=f"{self.smooth:.3f}")
        return advance

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)
        return False
