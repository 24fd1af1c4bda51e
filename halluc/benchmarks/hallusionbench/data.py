"""HallusionBench's files: the official question file (pinned, checksummed) and lmms-lab/HallusionBench."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from halluc.benchmarks.sources import Plan, require_columns
from halluc.benchmarks.spec import BenchmarkData, HFSource, Remote
from halluc.safe_paths import IMAGE_SUFFIXES, confined, relative_parts


def plan_hallusionbench(splits: Mapping[str, Any]) -> Plan:
    """lmms-lab/HallusionBench (the question file's columns plus image) -> HallusionBench.json + VD/, VS/ (a
    row's `filename` must be a relative image path inside the folder, as the release's `./VS/...` are)."""
    (ds,) = splits.values()
    fields = ("category", "subcategory", "visual_input", "set_id", "figure_id", "sample_note", "question_id",
              "question", "gt_answer_details", "gt_answer", "filename")
    require_columns(ds, (*fields[:5], "question_id", "question", "gt_answer", "filename", "image"), "HallusionBench")
    plan, rows = Plan(), []
    for n, row in enumerate(ds):
        record = {f: row.get(f) for f in fields}
        if record["filename"]:
            where = f"HallusionBench row {n} filename"
            parts = relative_parts(record["filename"], where)
            confined(Path("."), "/".join(parts), where, IMAGE_SUFFIXES)  # an image file type, checked up front
            plan.image(parts, row["image"], where)
        rows.append(record)
    plan.files[("HallusionBench.json",)] = json.dumps(rows, indent=1).encode("utf-8")
    return plan


HF = HFSource("lmms-lab/HallusionBench", "ea5fd49f1b711d12cc8b0ec75be0c0593e17befe", None, ("image",),
              plan_hallusionbench, lambda root: (root, root), "the 951 questions with a figure")
DATA = BenchmarkData(
    (Remote("https://raw.githubusercontent.com/tianyi-lab/HallusionBench/744007c232c292942c7f80eb61edb2465482da31/"
            "HallusionBench.json", "hallusionbench/HallusionBench.json",
            "ca6e0fb677dd56e5fb0e2700d06c58d01f8a6ae66e0f1773b2ac48c0a095d051"),),
    "HallusionBench figures: hallusion_bench.zip linked from the tianyi-lab/HallusionBench README "
                      "(unzip; pass --images .../hallusion_bench, the folder holding VD/ and VS/), or --source hf",
    HF)
