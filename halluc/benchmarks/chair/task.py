"""CHAIR as a task: captions of COCO images in, CHAIR_S / CHAIR_I / object recall out."""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from halluc.benchmarks.chair import scoring as chair
from halluc.benchmarks.chair.command import COMMAND
from halluc.benchmarks.chair.data import DATA
from halluc.benchmarks.io import read_jsonl
from halluc.benchmarks.paths import data_home, need_images
from halluc.benchmarks.spec import BenchmarkSpec, Metric, register_benchmark
from halluc.benchmarks.task import Protocol, Sample, Task
from halluc.errors import HallucError, unknown_choice

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

    def data_files(self) -> dict[str, Path]:
        """The ground truth: gt_objects.json, or the COCO annotation files of annotations/."""
        source = Path(self.gt_source)
        files = sorted(source.glob("*.json")) if source.is_dir() else [source]
        return {f"{source.name}/{p.name}" if source.is_dir() else p.name: p for p in files}

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

    def caption_splits(self) -> list[str]:
        return self.splits()

    def caption_objects(self, split, samples, texts):
        return [(Counter(set(check.hallucinated)), Counter(check.recalled))
                for check, _ in self.units(split, samples, texts)]

    def aggregate(self, split, units):
        return chair.aggregate_checks([u[0] for u in units], [u[1] for u in units]).as_dict()


def build(protocol: str | None = None, splits: list[str] | None = None, data: Path | None = None,
          images: Path | None = None, max_new_tokens: int | None = None) -> ChairTask:
    folder = Path(data) if data else data_home() / "chair"
    return ChairTask(image_ids=chair_image_ids(folder), gt_source=chair_gt(folder),
                     images_dir=need_images(images, "chair", "COCO val2014"), preset_name=protocol or "opera512",
                     max_new_tokens=max_new_tokens)


def chair_image_ids(folder: Path) -> tuple[int, ...]:
    for name in ("image_ids.jsonl", "opera_500_image_ids.jsonl"):
        if (folder / name).exists():
            return tuple(int(row["image_id"]) for row in read_jsonl(folder / name))
    raise HallucError(f"no CHAIR image list in {folder}: expected image_ids.jsonl or opera_500_image_ids.jsonl "
                      "(run `halluc data fetch chair` or pass --data DIR)")


def chair_gt(folder: Path) -> Path:
    if (folder / "annotations").is_dir():
        return folder / "annotations"
    candidates = [folder / "gt_objects.json", *sorted(folder.glob("gt_objects*nltk*.json")),
                  *sorted(folder.glob("gt_objects*.json"))]
    for path in candidates:
        if path.exists():
            return path
    raise HallucError(f"no CHAIR ground truth in {folder}: expected annotations/ (COCO 2014 instances and captions) "
                      "or gt_objects.json (image id -> object names)")


SPEC = register_benchmark(BenchmarkSpec(
    name="chair", data=DATA, score=COMMAND, title="CHAIR", headline="chair_i", build=build,
    compact=("chair_s", "recall", "avg_len"), tradeoff=("recall", "chair_i"),
    metrics=(Metric("chair_i", "CHAIR_I", "lower", description="hallucinated object mentions / all mentions"),
             Metric("chair_s", "CHAIR_S", "lower", description="captions with a hallucinated object"),
             Metric("recall", "object recall", "higher", description="ground-truth objects mentioned"),
             Metric("avg_len", "caption length", None, unit="words"), Metric("n", "n", None, unit=""))))
