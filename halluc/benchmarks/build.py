"""From command-line words (benchmark, protocol, splits, --data, --images) to a Task."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from halluc.benchmarks import mme, pope
from halluc.benchmarks.io import read_jsonl
from halluc.benchmarks.tasks import ChairTask, MMETask, PopeTask, Task
from halluc.errors import HallucError, unknown_choice
from halluc.plugins import load_plugins

BENCHMARKS = ("pope", "chair", "mme")


class DatasetBuilder(Protocol):
    """Builds a benchmark's task on a dataset other than COCO: (benchmark, protocol, splits, max_new_tokens) -> Task."""

    def __call__(self, benchmark: str, protocol: str | None, splits: list[str] | None,
                 max_new_tokens: int | None) -> Task: ...


_DATASETS: dict[str, DatasetBuilder] = {}


def register_dataset(name: str, builder: DatasetBuilder) -> None:
    """Add an image set benchmarks can run on (`--dataset NAME`); plugins register theirs (the toy world)."""
    if name == "coco" or name in _DATASETS:
        raise ValueError(f"dataset '{name}' is already registered")
    _DATASETS[name] = builder


def datasets() -> list[str]:
    load_plugins()
    return ["coco", *_DATASETS]


def data_home() -> Path:
    """Where `halluc data fetch` puts benchmark files: $HALLUC_DATA or ~/.cache/halluc/data."""
    return Path(os.environ.get("HALLUC_DATA", Path.home() / ".cache" / "halluc" / "data"))


def build_task(benchmark: str, *, protocol: str | None = None, splits: list[str] | None = None,
               data: Path | None = None, images: Path | None = None, max_new_tokens: int | None = None,
               dataset: str = "coco") -> Task:
    if dataset not in datasets():
        raise unknown_choice("dataset", dataset, datasets())
    if dataset != "coco":
        return _DATASETS[dataset](benchmark, protocol, splits, max_new_tokens)
    if benchmark == "pope":
        preset = pope.get_protocol(protocol or "llava")
        folder = Path(data) if data else data_home() / "pope" / preset.question_set
        return PopeTask(data_dir=folder, images_dir=_need(images, "pope", "COCO val2014"),
                        chosen_splits=tuple(splits or pope.SPLITS), preset=preset, max_new_tokens=max_new_tokens)
    if benchmark == "chair":
        folder = Path(data) if data else data_home() / "chair"
        return ChairTask(image_ids=chair_image_ids(folder), gt_source=chair_gt(folder),
                         images_dir=_need(images, "chair", "COCO val2014"), preset_name=protocol or "opera512",
                         max_new_tokens=max_new_tokens)
    if benchmark == "mme":
        root = images or data
        if root is None:
            raise HallucError("mme needs --images DIR: the MME_Benchmark_release_version folder (images and questions)")
        return MMETask(release_dir=Path(root), subtasks=tuple(splits or mme.SUBTASKS), prompt_variant=protocol or "llava")
    raise unknown_choice("benchmark", benchmark, BENCHMARKS)


def _need(images: Path | None, benchmark: str, what: str) -> Path:
    if images is None:
        raise HallucError(f"{benchmark} needs --images DIR with the {what} images")
    if not Path(images).is_dir():
        raise HallucError(f"images directory not found: {images}")
    return Path(images)


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

