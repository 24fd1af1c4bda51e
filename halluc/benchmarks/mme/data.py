"""MME's files: the official eval tool, and the lmms-lab/MME HF dataset (questions and images)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from halluc.benchmarks.sources import Plan, image_bytes, image_suffix, require_columns
from halluc.benchmarks.spec import BenchmarkData, HFSource, Remote
from halluc.errors import HallucError
from halluc.safe_paths import IMAGE_SUFFIXES, name_component


def plan_mme(splits: Mapping[str, Any]) -> Plan:
    """lmms-lab/MME (question_id = subtask/image file, image, question, answer, category) -> the release
    layout: <category>/<image> beside <category>/<stem>.txt with `question<TAB>answer` lines."""
    (ds,) = splits.values()
    require_columns(ds, ("question_id", "question", "answer", "category", "image"), "MME")
    plan = Plan()
    questions: dict[tuple[str, str], list[str]] = {}
    for n, row in enumerate(ds):
        where = f"MME row {n}"
        category = name_component(row["category"], where + " category")
        name = name_component(PurePosixPath(str(row["question_id"])).name, where + " question_id")
        stem = PurePosixPath(name).stem
        suffix = PurePosixPath(name).suffix or image_suffix(image_bytes(row["image"], where))
        if suffix.lower() not in IMAGE_SUFFIXES:
            raise HallucError(f"{where} question_id: {name!r:.80} is not an image file name")
        plan.image((category, name_component(stem + suffix, where)), row["image"], where)
        question = " ".join(str(row["question"]).split())
        questions.setdefault((category, f"{stem}.txt"), []).append(f"{question}\t{str(row['answer']).strip()}")
    for parts, lines in questions.items():
        plan.text(parts, lines)
    return plan


HF = HFSource("lmms-lab/MME", "d6c9023f017b564f7b3ccccf5348166bce8fdbcd", None, ("test",), plan_mme,
              lambda root: (root, root))
DATA = BenchmarkData(
    (Remote("https://github.com/BradyFU/Awesome-Multimodal-Large-Language-Models/raw/Evaluation/tools/eval_tool.zip",
            "mme/eval_tool.zip", None),),
    "MME images: request form in BradyFU/Awesome-Multimodal-Large-Language-Models (branch Evaluation) or "
    "the HF mirror lmms-lab/MME; pass --images .../MME_Benchmark_release_version",
    HF)
