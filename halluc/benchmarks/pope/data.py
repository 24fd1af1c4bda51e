"""POPE's files: the official question files (pinned, checksummed) and the lmms-lab/POPE HF dataset."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from halluc.benchmarks.sources import Plan, require_columns
from halluc.benchmarks.spec import BenchmarkData, HFSource, Remote
from halluc.safe_paths import name_component

_POPE = "https://raw.githubusercontent.com/{repo}/{ref}/{path}/coco_pope_{split}.json"
_POPE_SHA = {
    "coco": {"random": "ac25245170b975a5bdf9080b23fd431dfe6be458bc038259c1f4f09a6bef7994",
             "popular": "72c1a8ad45d0c13514f5f22598261df41d3b533854d29682e924db50ed8aa753",
             "adversarial": "420b3407db1fa9f1187a805dca41cb7b97fd91504e6c2179706188c107fb8ef8"},
    "coco_2910": {"random": "c16b65d2df6d70bb0814c8a4375833d39cdb09928fd936d3fc546491efa37f35",
                  "popular": "5b16653023bf4f64d57eb0d168259de6627f5cde7538b85ebed3cc33034aa6cc",
                  "adversarial": "1d8f0906a9b50c05640f6f23abfac97523be2a1bed28f7eadc63b811699b2d26"},
}
# 3,000-question files: RUCAIBox/POPE at 3df3ba1; 2,910 (LLaVA/OPERA): the copy in shikiw/OPERA (= POPE e3e3926).
_POPE_SRC = {"coco": ("RUCAIBox/POPE", "3df3ba1", "output/coco"), "coco_2910": ("shikiw/OPERA", "main", "pope_coco")}

REMOTES = tuple(Remote(_POPE.format(repo=_POPE_SRC[v][0], ref=_POPE_SRC[v][1], path=_POPE_SRC[v][2], split=s),
                       f"pope/{v}/coco_pope_{s}.json", sha)
                for v, splits in _POPE_SHA.items() for s, sha in splits.items())
IMAGES = "COCO val2014 images: http://images.cocodataset.org/zips/val2014.zip (unzip; pass --images .../val2014)"


def plan_pope(splits: Mapping[str, Any]) -> Plan:
    """lmms-lab/POPE (question_id, question, answer, image_source, image, category) -> coco_pope_{split}.json,
    images/<image_source>.jpg (image_source must be a plain name: it is COCO's file stem)."""
    plan = Plan()
    for split, ds in splits.items():
        require_columns(ds, ("question_id", "question", "answer", "image_source", "image"), f"POPE {split}")
        lines = []
        for n, row in enumerate(ds):
            where = f"POPE {split} row {n}"
            image = name_component(f"{name_component(row['image_source'], where + ' image_source')}.jpg", where)
            plan.image(("images", image), row["image"], where)
            lines.append(json.dumps({"question_id": row["question_id"], "image": image, "text": row["question"],
                                     "label": str(row["answer"]).strip().lower()}))
        plan.text((f"coco_pope_{split}.json",), lines)
    return plan


# the 3,000-question POPE files (RUCAIBox/POPE output/coco), one split per POPE split
HF = HFSource("lmms-lab/POPE", "4db1276663dfa5eb8ad16a52d24c31a09e470896", "Full",
              ("random", "popular", "adversarial"), plan_pope, lambda root: (root, root / "images"),
              "the 3,000-question version")
DATA = BenchmarkData(REMOTES, IMAGES, HF)
