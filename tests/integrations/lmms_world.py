"""The toy world's POPE as lmms-eval reads POPE: a `save_to_disk` copy in the lmms-lab/POPE schema, and a task
YAML that includes lmms-eval's own `pope_adv.yaml`, pointed at that copy (`--include_path`)."""
from __future__ import annotations

import json
from pathlib import Path

POPE_SCHEMA = ("id", "question_id", "question", "answer", "image_source", "category")
TASK = "halluc_world_pope_adv"


def world_pope() -> tuple[Path, Path]:
    """(the toy world's adversarial POPE question file, its images folder), rendered once into the data home."""
    from halluc.benchmarks.paths import data_home
    from halluc.world.benchmark import eval_config, prepare_world_benchmarks
    from halluc.world.model import TRAIN_WORLD

    bench = prepare_world_benchmarks(data_home(), eval_config(TRAIN_WORLD))
    return bench.pope / "coco_pope_adversarial.json", bench.images


def write_dataset(questions: Path, images: Path, out: Path, limit: int) -> list[dict]:
    """The first `limit` questions as lmms-lab/POPE's `Full` config (split `adversarial`), saved with
    `save_to_disk`; returns the questions (halluc's question-file rows)."""
    from datasets import Dataset, DatasetDict, Features, Image, Value

    rows = [json.loads(line) for line in questions.read_text(encoding="utf-8").splitlines() if line.strip()][:limit]
    features = Features({**{name: Value("string") for name in POPE_SCHEMA}, "image": Image()})
    table = {"id": [str(i) for i in range(len(rows))], "question_id": [str(r["question_id"]) for r in rows],
             "question": [r["text"] for r in rows], "answer": [r["label"] for r in rows],
             "image_source": [Path(r["image"]).stem for r in rows], "category": ["adversarial"] * len(rows),
             "image": [str(images / r["image"]) for r in rows]}
    DatasetDict({"adversarial": Dataset.from_dict(table, features=features)}).save_to_disk(str(out))
    return rows


def write_task(folder: Path, dataset: Path) -> Path:
    """A task YAML that is lmms-eval's `pope_adv` with only the data source changed."""
    import lmms_eval

    own = Path(lmms_eval.__file__).parent / "tasks" / "pope" / "pope_adv.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{TASK}.yaml"
    path.write_text(f"include: {own}\ntask: {TASK}\ndataset_path: {dataset}\n"
                    "dataset_kwargs:\n  load_from_disk: true\n", encoding="utf-8")
    return path
