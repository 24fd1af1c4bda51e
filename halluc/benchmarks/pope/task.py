"""POPE as a task: question files in, official POPE metrics out; mean over the three splits."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from halluc.benchmarks.paths import data_home, need_images
from halluc.benchmarks.pope import scoring as pope
from halluc.benchmarks.pope.command import COMMAND
from halluc.benchmarks.pope.data import DATA
from halluc.benchmarks.spec import BenchmarkSpec, Metric, register_benchmark
from halluc.benchmarks.task import Protocol, Sample, Task
from halluc.errors import HallucError, unknown_choice
from halluc.safe_paths import confined


@dataclass
class PopeTask(Task):
    """POPE on question files `coco_pope_{split}.json` in `data_dir`, images in `images_dir`."""

    data_dir: Path = Path(".")
    images_dir: Path = Path(".")
    chosen_splits: tuple[str, ...] = pope.SPLITS
    preset: pope.PopeProtocol = field(default_factory=lambda: pope.get_protocol("llava"))
    max_new_tokens: int | None = None
    relabel_dirs: tuple[Path, ...] = ()  # where to look for RePOPE files (coco_repope_{split}.json)

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
        return [Sample(str(q.question_id), confined(self.images_dir, q.image, f"{path.name} question {q.question_id}"),
                       self.preset.prompt(q.text), q)
                for q in pope.read_pope_questions(path, split)]

    def data_files(self) -> dict[str, Path]:
        return {f"coco_pope_{split}.json": Path(self.data_dir) / f"coco_pope_{split}.json" for split in self.splits()}

    def question_set(self) -> str | None:
        """"coco" (the 3,000-question files) or "coco_2910" (POPE e3e3926, whose random split has 2,910),
        known by the content of every chosen split (ids and texts; the two differ in ids and typos), or by
        the pinned HF dataset (the 3,000-question version); None for other files (the toy world's, yours)."""
        found = {_KNOWN_SETS.get(_content_digest(self.samples(split))) for split in self.splits()}
        if len(found) == 1 and None not in found:
            return found.pop()
        pinned = (self.data_source or {}).get("dataset") == "lmms-lab/POPE"
        return "coco" if pinned and found <= {None, "coco"} else None

    def units(self, split, samples, texts):
        """(prediction or None when unanswered/unparsed, label) per question, as `score_pope` counts them."""
        predict = pope.predictor(self.preset.parser)
        return [(predict(texts[s.id], s.target.label) if texts.get(s.id) is not None else None, s.target.label)
                for s in samples]

    def aggregate(self, split, units):
        return pope.pair_metrics(Counter(units), len(units)).as_dict()  # units are (prediction, label) pairs

    def yes_no_splits(self) -> list[str]:
        return self.splits()

    def yes_no(self, split, samples, texts):
        return self.units(split, samples, texts)


# sha256 (first 16 hex digits) of the sorted [question_id, text] pairs of each published split
_KNOWN_SETS = {"8f50fb53edb0ef74": "coco", "6ac67e02d5457f60": "coco", "48f4e106cda92f07": "coco",
               "716b827da84d207a": "coco_2910", "2dec912df905ccd1": "coco_2910", "2f0006e56e1958bb": "coco_2910"}


def _content_digest(samples: list[Sample]) -> str:
    pairs = sorted([str(s.target.question_id), s.target.text] for s in samples)
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]


def build(protocol: str | None = None, splits: list[str] | None = None, data: Path | None = None,
          images: Path | None = None, max_new_tokens: int | None = None) -> PopeTask:
    preset = pope.get_protocol(protocol or "llava")
    folder = Path(data) if data else data_home() / "pope" / preset.question_set
    return PopeTask(data_dir=folder, images_dir=need_images(images, "pope", "COCO val2014"),
                    chosen_splits=tuple(splits or pope.SPLITS), preset=preset, max_new_tokens=max_new_tokens,
                    relabel_dirs=(folder, data_home() / "repope"))


def mean_row(rows: list[dict]) -> list[dict]:
    """POPE's headline row: the mean of each metric over the splits of one method (split 'mean')."""
    by_method: dict[str, list[dict]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    out = []
    for group in by_method.values():
        if len(group) > 1:
            numeric = [k for k, v in group[0].items() if isinstance(v, (int, float)) and k not in ("seed", "limit")
                       and all(k in r for r in group)]  # a key some split lacks (a damaged file) has no mean
            mean = {k: sum(r[k] for r in group if r[k] is not None) / len(group) for k in numeric}
            out.append({**group[0], **mean, "split": "mean", "n": sum(r.get("n") or 0 for r in group)})
    return out


SPEC = register_benchmark(BenchmarkSpec(
    name="pope", data=DATA, score=COMMAND, title="POPE", headline="f1", build=build, summary_rows=mean_row,
    summary_split="mean",
    compact=("yes_ratio",),
    metrics=(Metric("f1", "F1", "higher"), Metric("accuracy", "accuracy", "higher"),
             Metric("precision", "precision", "higher"), Metric("recall", "POPE recall", "higher",
                                                                description="share of present objects answered yes"),
             Metric("yes_ratio", "yes ratio", None, description="share of yes answers (50 = balanced)",
                    reference=50.0),
             Metric("unparsed", "unparsed", "lower", unit=""), Metric("n", "n", None, unit=""))))
