"""The toy world's POPE and CHAIR, built exactly as on COCO: from a COCO-format instances file.

`prepare_world_benchmarks` renders the evaluation split once into the data home (deterministic, so
the files are a cache: the same config always gives the same bytes) and writes
    pope/coco_pope_{random,popular,adversarial}.json   official POPE format, official sampling
    chair/image_ids.jsonl, chair/gt_objects.json        CHAIR image list and ground truth
so the ordinary `PopeTask` / `ChairTask` run on it unchanged.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from halluc.benchmarks.chair.task import ChairTask, chair_gt, chair_image_ids
from halluc.benchmarks.paths import data_home
from halluc.benchmarks.pope import scoring as pope
from halluc.benchmarks.pope.scoring import SPLITS, build_pope_from_coco
from halluc.benchmarks.pope.task import PopeTask
from halluc.benchmarks.task import Task
from halluc.errors import HallucError
from halluc.world.coco import WORLD_VERSION, generate_world
from halluc.world.scenes import WorldConfig

EVAL_IMAGES = 150  # rendered val images; POPE samples from them, CHAIR captions all of them


@dataclass(frozen=True)
class WorldBenchmarks:
    root: Path
    images: Path
    pope: Path  # folder with the three POPE question files
    chair: Path  # folder with image_ids.jsonl and gt_objects.json


def eval_config(train_config: WorldConfig) -> WorldConfig:
    """The evaluation world: the training world's look, with >= 3 objects so POPE has 3 positives."""
    return replace(train_config, min_objects=max(3, train_config.min_objects))


def prepare_world_benchmarks(home: Path, config: WorldConfig, n_images: int = EVAL_IMAGES,
                             pope_images: int = 100, seed: int = 0) -> WorldBenchmarks:
    key = hashlib.sha256(json.dumps([WORLD_VERSION, asdict(config), n_images, pope_images, seed],
                                    sort_keys=True, default=str).encode()).hexdigest()[:10]
    root = Path(home) / "world" / key
    bench = WorldBenchmarks(root, root / "val" / "images", root / "pope", root / "chair")
    if (root / "complete").exists():
        return bench
    files = generate_world(root / "val", config, n_images=n_images, split="val")
    bench.pope.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        questions = build_pope_from_coco(files.instances, split, n_images=pope_images, seed=seed)
        lines = [json.dumps({"question_id": q.question_id, "image": q.image, "text": q.text,
                             "label": "yes" if q.label else "no"}) for q in questions]
        (bench.pope / f"coco_pope_{split}.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _write_chair(files.instances, bench.chair)
    (root / "complete").touch()  # written last: a killed preparation is redone, never half-used
    return bench


def _write_chair(instances_path: Path, folder: Path) -> None:
    data = json.loads(Path(instances_path).read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in data["categories"]}
    gt: dict[str, list[str]] = {str(img["id"]): [] for img in data["images"]}
    for ann in data["annotations"]:
        gt[str(ann["image_id"])].append(names[ann["category_id"]])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gt_objects.json").write_text(json.dumps({k: sorted(set(v)) for k, v in gt.items()}), encoding="utf-8")
    ids = "\n".join(json.dumps({"image_id": img["id"]}) for img in data["images"])
    (folder / "image_ids.jsonl").write_text(ids + "\n", encoding="utf-8")


def world_task(benchmark: str, protocol: str | None, splits: list[str] | None, max_new_tokens: int | None) -> Task:
    """POPE / CHAIR on the toy world toy-llava was trained on (rendered once into the data home);
    registered as `--dataset world` by `halluc.world.plugin`."""
    from halluc.world.model import TRAIN_WORLD

    bench = prepare_world_benchmarks(data_home(), eval_config(TRAIN_WORLD))
    if benchmark == "pope":
        return PopeTask(data_dir=bench.pope, images_dir=bench.images, chosen_splits=tuple(splits or SPLITS),
                        preset=pope.get_protocol(protocol or "llava"), max_new_tokens=max_new_tokens)
    if benchmark == "chair":
        return ChairTask(image_ids=chair_image_ids(bench.chair), gt_source=chair_gt(bench.chair),
                         images_dir=bench.images, preset_name=protocol or "short64", image_name="{}.png",
                         max_new_tokens=max_new_tokens)
    raise HallucError(f"the toy world has pope and chair, not {benchmark}")
