"""Train toy-llava on the toy world's train split, deterministically, on CPU in well under an hour.

Two stages, as LLaVA starts from a pretrained CLIP:
  1. vision (`halluc.world.pretrain`): the ViT learns what covers each patch, from the generator's
     exact per-patch labels; its head is then thrown away and the tower frozen.
  2. language: projector and Llama decoder learn, on fresh scenes (`scene_at(world, "train", k)`), either
     * a caption: "Please describe this image in detail." (or a short variant) -> the world's caption,
       which names every object at least `caption_min_visibility` visible; or
     * a yes/no question, "Is there a {obj} in the image?" with no suffix or one of the POPE protocols'
       suffixes -> "Yes" / "No" (`halluc.world.qa.yes_no_pairs`), "Yes" half of the time.
     The loss is on the answer tokens (and </s>) only. AdamW, linear warm-up, cosine decay to 10%.

Where the hallucination comes from. `prior_negative_rate` is small: the "No" questions of training
mostly name objects that do not belong to the scene type, so "this is a kitchen" alone predicts most
answers. The model learns that shortcut and checks the pixels only partly, so it says "Yes" to absent
objects the scene usually has (POPE adversarial / popular) and names them in captions (CHAIR), while
answering random absent objects and clearly visible ones correctly.

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

from halluc.progress import Progress
from halluc.world.captions import caption
from halluc.world.coco import WORLD_VERSION
from halluc.world.model import CAPTION_PROMPTS, QUESTION_SUFFIXES, ToyModelConfig, build_toy_llava, parameter_count
from halluc.world.pretrain import optimise, pretrain_vision
from halluc.world.qa import yes_no_pairs
from halluc.world.scenes import render_scene, scene_at

IGNORE = -100


@dataclass(frozen=True)
class TrainRecipe:
    """Optimiser and data mix. Defaults are what the shipped weights were trained with.

    Args:
        vision_steps, vision_batch_size, vision_lr: stage 1 (ViT on per-patch labels). 0 steps skips it
            and trains the ViT end to end with the language stage instead (it then learns little more
            than the background: the answers carry too few bits to teach it the objects).
        batch_size: samples (= scenes) per language step.
        lr, weight_decay, warmup, min_lr_ratio: AdamW of the language stage; linear warm-up for `warmup`
            steps, then cosine decay to `min_lr_ratio * lr`. Above ~1e-3 the decoder never learns to
            look up the asked object and answers yes/no at chance.
        caption_rate: fraction of samples that are captions; the rest are yes/no questions.
        detail_prompt_rate: fraction of captions asked with "Please describe this image in detail."
            (CHAIR's prompt); the others use a short variant.
        yes_rate: fraction of yes/no questions answered "Yes" (0.5: no answer bias to learn).
        prior_negative_rate: of the "No" questions, the fraction naming an absent object of the scene's
            own prior (`yes_no_pairs`); 0 leaves the prior unchallenged, 0.5+ teaches to check the image.
        threads: torch CPU threads. Results are bit-identical only for the same value; 1 is also the
            fastest choice on a busy machine (idle threads of a shared BLAS pool spin and stall).
    """
    vision_steps: int = 400
    vision_batch_size: int = 64
    vision_lr: float = 2e-3
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup: int = 60
    min_lr_ratio: float = 0.1
    caption_rate: float = 0.3
    detail_prompt_rate: float = 0.7
    yes_rate: float = 0.5
    prior_negative_rate: float = 0.15
    threads: int = 1

    def __post_init__(self):
        for name in ("caption_rate", "detail_prompt_rate", "yes_rate", "prior_negative_rate", "min_lr_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if min(self.batch_size, self.vision_batch_size, self.threads) < 1 or min(self.lr, self.vision_lr) <= 0:
            raise ValueError("batch sizes and threads must be >= 1 and learning rates > 0")
        if self.warmup < 0 or self.vision_steps < 0:
            raise ValueError("warmup and vision_steps must be >= 0")


DEFAULT_STEPS = 1200


@dataclass
class TrainResult:
    out_dir: Path | None
    steps: int
    seed: int
    seconds: float
    final_loss: float          # mean loss of the last 10% of language steps
    losses: list[float] = field(repr=False, default_factory=list)   # per language step
    vision_losses: list[float] = field(repr=False, default_factory=list)   # per stage-1 step
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
            wanted = "Yes" if rng.random() < recipe.yes_rate else "No"
            pair = rng.choice([q for q in pairs if q.answer == wanted] or pairs)
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
    start = time.monotonic()
    with _progress({"vision": recipe.vision_steps, "language": steps}, progress) as advance:
        def language_step(step: int, loss: float) -> None:
            advance("language", loss)
            if on_step is not None:
                on_step(step, loss)

        vision_losses = pretrain_vision(model, processor, config.world, config.patch_size, recipe.vision_steps,
                                        recipe.vision_batch_size, recipe.vision_lr, seed,
                                        lambda step, loss: advance("vision", loss))
        if recipe.vision_steps:
            model.model.vision_tower.requires_grad_(False)   # frozen, as LLaVA keeps its CLIP
        losses = _language_stage(model, processor, config, seed, steps, recipe, language_step)
    seconds = time.monotonic() - start
    tail = losses[-max(1, steps // 10):]
    model.requires_grad_(True)
    result = TrainResult(Path(out_dir) if out_dir else None, steps, seed, seconds, float(np.mean(tail)), losses,
                         vision_losses, parameter_count(model), model.eval(), processor)
    if result.out_dir is not None:
        save(model, processor, result, config, recipe)
    return result


def _language_stage(model, processor, config: ToyModelConfig, seed: int, steps: int, recipe: TrainRecipe,
                    on_step: Callable[[int, float], Any]) -> list[float]:
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, recipe))
    data = samples(config, recipe, seed)
    losses: list[float] = []
    for step in range(steps):
        batch = collate([next(data) for _ in range(recipe.batch_size)], processor)
        losses.append(optimise(answer_loss(model, batch), trained, optimizer, schedule))
        on_step(step, losses[-1])
    return losses


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
    decay: list[torch.nn.Parameter] = []
    rest: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "embed" not in name else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def save(model: Any, processor: Any, result: TrainResult, config: ToyModelConfig, recipe: TrainRecipe) -> None:
    if result.out_dir is None:
        raise ValueError("save() needs a result with an out_dir")
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    every = max(1, result.steps // 50)
    record = {
        "command": f"halluc world train --out {out} --seed {result.seed} --steps {result.steps}",
        "seed": result.seed, "steps": result.steps, "world_version": WORLD_VERSION,
        "seconds": round(result.seconds, 1),
        "final_loss": round(result.final_loss, 4), "parameters": result.parameters,
        "vision_final_loss": round(float(np.mean(result.vision_losses[-10:])), 4) if result.vision_losses else None,
        "torch": torch.__version__, "threads": recipe.threads, "platform": sys.platform, "cpus": os.cpu_count(),
        "config": asdict(config), "recipe": asdict(recipe),
        "loss_curve": {str(i): round(result.losses[i], 4) for i in range(0, result.steps, every)},
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


class _progress:
    """Progress per stage, with the smoothed loss and an ETA, on stderr (`halluc.progress`: bars on a
    terminal, plain lines in a log; off when HALLUC_PROGRESS=0). Entering gives `advance(stage, loss)`."""

    def __init__(self, stages: dict[str, int], enabled: bool):
        self.stages = {name: total for name, total in stages.items() if total}
        self.enabled = enabled

    def __enter__(self):
        if not self.enabled:
            return lambda stage, loss: None
        self.progress = Progress("halluc world train", total=sum(self.stages.values()), unit="steps").__enter__()
        self.part, self.stage = None, None
        smooth: dict[str, float] = {}

        def advance(stage: str, loss: float) -> None:
            if stage != self.stage:
                self._close_part()
                self.stage, self.part = stage, self.progress.part(stage, self.stages[stage])
                self.part.__enter__()
            smooth[stage] = loss if stage not in smooth else 0.95 * smooth[stage] + 0.05 * loss
            self.progress.advance(note=f"loss {smooth[stage]:.3f}")
        return advance

    def _close_part(self) -> None:
        if self.part is not None:
            self.part.__exit__(None, None, None)
            self.part = None

    def __exit__(self, *exc):
        if self.enabled:
            self._close_part()
            self.progress.__exit__(*exc)
        return False
