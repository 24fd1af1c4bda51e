"""Benchmarks as tasks a run can execute: samples in, official metrics out.

A task turns benchmark files into `Sample`s (id, image, prompt), and scores generated texts in two
steps, `units` (one scoring unit per sample or image, computed once) and `aggregate` (the official
metric over a list of units). Scoring a run is `aggregate(units(...))`; the report's paired bootstrap
re-aggregates resampled units, so confidence intervals use exactly the official arithmetic.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halluc.benchmarks import chair, mme, pope
from halluc.errors import HallucError, unknown_choice


@dataclass(frozen=True)
class Sample:
    id: str  # unique within its task and split
    image: Path
    prompt: str
    target: Any = None  # what scoring needs: a POPE question, a CHAIR image id, an MME item


@dataclass(frozen=True)
class Protocol:
    """A published way of running a benchmark; recorded with every result."""

    name: str
    decoding: Mapping[str, Any]  # halluc.Decoding fields
    notes: str = ""


@dataclass
class Task:
    """Base: subclasses fill `samples`, `units` and `aggregate`."""

    name: str = ""
    version: str = "1"
    protocol: Protocol = field(default_factory=lambda: Protocol("default", {}))

    def splits(self) -> list[str]:
        raise NotImplementedError

    def samples(self, split: str) -> list[Sample]:
        raise NotImplementedError

    def units(self, split: str, samples: Sequence[Sample], texts: Mapping[str, str | None]) -> list:
        raise NotImplementedError

    def aggregate(self, split: str, units: Sequence) -> dict[str, float]:
        raise NotImplementedError

    def score(self, split: str, samples: Sequence[Sample], texts: Mapping[str, str | None]) -> dict[str, float]:
        return self.aggregate(split, self.units(split, samples, texts))

    def describe(self) -> dict:
        return {"benchmark": self.name, "task_version": self.version, "protocol": self.protocol.name,
                "decoding": dict(self.protocol.decoding)}


def check_images(samples: Sequence[Sample], images_dir: Path) -> None:
    """Name missing images before any generation starts."""
    missing = sorted({s.image.name for s in samples if not s.image.exists()})
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise HallucError(f"{len(missing)} images missing from {images_dir}: {shown}")


# ------------------------------------------------------------------------------------ POPE

@dataclass
class PopeTask(Task):
    """POPE on question files `coco_pope_{split}.json` in `data_dir`, images in `images_dir`."""

    data_dir: Path = Path(".")
    images_dir: Path = Path(".")
    chosen_splits: tuple[str, ...] = pope.SPLITS
    preset: pope.PopeProtocol = field(default_factory=lambda: pope.get_protocol("llava"))
    max_new_tokens: int | None = None

    def __post_init__(self):
        self.name, self.version = "pope", "1"
        decoding = dict(self.preset.decoding)
        if self.max_new_tokens:
            decoding["max_new_tokens"] = self.max_new_tokens
        self.protocol = Protocol(self.preset.name, decoding, self.preset.source)
        for split in self.chosen_splits:
            if split not in pope.SPLITS:
                raise unknown_choice("POPE split", split, pope.SPLITS)

    def splits(self) -> list[str]:
        return list(self.chosen_splits)

    def samples(self, split: str) -> list[Sample]:
        path = Path(self.data_dir) / f"coco_pope_{split}.json"
        if not path.exists():
            raise HallucError(f"POPE question file missing: {path} (run `halluc data fetch pope` or pass --data DIR)")
        return [Sample(str(q.question_id), Path(self.images_dir) / q.image, self.preset.prompt(q.text), q)
                for q in pope.read_pope_questions(path, split)]

    def units(self, split, samples, texts):
        """(prediction or None when unanswered/unparsed, label) per question, as `score_pope` counts them."""
        predict = pope.predictor(self.preset.parser)
        return [(predict(texts[s.id], s.target.label) if texts.get(s.id) is not None else None, s.target.label)
                for s in samples]

    def aggregate(self, split, units):
        return pope.pope_metrics([u[0] for u in units], [u[1] for u in units]).as_dict()


# ------------------------------------------------------------------------------------ CHAIR

CHAIR_PROMPT = "Please describe this image in detail."


@dataclass
class ChairTask(Task):
    """CHAIR on a list of COCO image ids (default: OPERA's 500), ground truth from COCO annotations or JSON."""

    image_ids: tuple[int, ...] = ()
    gt_source: Path = Path(".")
    images_dir: Path = Path(".")
    preset_name: str = "opera512"
    image_name: str = "COCO_val2014_{:012d}.jpg"
    max_new_tokens: int | None = None

    PRESETS = {"opera512": (512, False), "short64": (64, True)}  # max tokens, drop the unfinished sentence

    def __post_init__(self):
        self.name, self.version = "chair", "1"
        if self.preset_name not in self.PRESETS:
            raise unknown_choice("CHAIR protocol", self.preset_name, self.PRESETS)
        tokens, self.trim = self.PRESETS[self.preset_name]
        decoding = {"do_sample": False, "max_new_tokens": self.max_new_tokens or tokens}
        self.protocol = Protocol(self.preset_name, decoding, f"prompt {CHAIR_PROMPT!r}; greedy; trim={self.trim}")
        self._gt = None

    def splits(self) -> list[str]:
        return ["val"]

    def samples(self, split: str) -> list[Sample]:
        return [Sample(str(i), Path(self.images_dir) / self.image_name.format(i), CHAIR_PROMPT, i)
                for i in self.image_ids]

    def gt(self) -> Mapping[int, frozenset[str]]:
        if self._gt is None:
            self._gt = chair.load_chair_gt(self.gt_source, self.image_ids)
        return self._gt

    def units(self, split, samples, texts):
        gt = self.gt()
        units = []
        for s in samples:
            caption = texts.get(s.id) or ""
            caption = chair.trim_incomplete(caption) if self.trim else caption
            units.append((chair.check_caption(s.target, caption, gt[s.target]), len(set(gt[s.target]))))
        return units

    def aggregate(self, split, units):
        return chair.aggregate_checks([u[0] for u in units], [u[1] for u in units]).as_dict()


# ------------------------------------------------------------------------------------ MME

@dataclass
class MMETask(Task):
    """MME from the official image release at `release_dir`, one split per subtask."""

    release_dir: Path = Path(".")
    subtasks: tuple[str, ...] = mme.SUBTASKS
    prompt_variant: str = "llava"  # "llava" (LLaVA's suffix) or "official" (question as released)

    def __post_init__(self):
        self.name, self.version = "mme", "1"
        if self.prompt_variant not in ("llava", "official"):
            raise unknown_choice("MME prompt variant", self.prompt_variant, ("llava", "official"))
        for sub in self.subtasks:
            if sub not in mme.SUBTASKS:
                raise unknown_choice("MME subtask", sub, mme.SUBTASKS)
        self.protocol = Protocol(self.prompt_variant, {"do_sample": False, "max_new_tokens": 128},
                                 "greedy; answers parsed with the eval tool's parse_pred_ans")
        self._items = None

    def splits(self) -> list[str]:
        return list(self.subtasks)

    def samples(self, split: str) -> list[Sample]:
        if self._items is None:
            self._items = mme.read_mme_release(self.release_dir, self.subtasks)
        prompt = mme.llava_prompt if self.prompt_variant == "llava" else (lambda q: q)
        return [Sample(f"{item.image}|{item.question}", Path(item.image_path), prompt(item.question), item)
                for item in self._items if item.subtask == split]

    def units(self, split, samples, texts):
        by_image: dict[str, list] = {}
        for s in samples:
            item = s.target
            response = texts.get(s.id) or ""
            by_image.setdefault(item.image, []).append(
                mme.MMEItem(item.subtask, item.image, item.question, item.answer, response.replace("\n", " ")))
        return list(by_image.values())  # one unit per image: acc+ needs both of its questions

    def aggregate(self, split, units):
        items = [item for unit in units for item in unit]
        return {**mme.score_mme_subtask(items).as_dict(), "n": len(items)}
