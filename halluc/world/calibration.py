"""The toy world's calibration set for steering methods (VTI): training scenes with a correct caption and a
hallucinated one, in the format of VTI's demo file (`value`, `h_value`, `co_objects`).

The hallucinated caption swaps 1-3 of the mentioned objects for absent ones the scene type makes likely
(its prior's most frequent absent objects), as the demo file swaps COCO objects for co-occurring ones.
Registered by `halluc.world.plugin` as the calibration set "world"; nothing in halluc imports this module.
"""
from __future__ import annotations

import random
import re

from halluc.benchmarks.chair.task import CHAIR_PROMPT
from halluc.engine.calibration_sets import CalibrationRecord
from halluc.world.captions import article, caption
from halluc.world.scenes import SCENE_PRIORS, render_scene, scene_at
from halluc.world.vocab import BY_NAME

RECORDS = 100  # as many as VTI's demo file
_ARTICLE = re.compile(r"\b([Aa]n?) (\w)")


def swap_objects(text: str, present: list[str], kind: str, rng: random.Random) -> str:
    """`text` with 1-3 of the `present` objects named as absent ones the scene type `kind` makes likely."""
    absent = sorted((c for c in SCENE_PRIORS[kind] if c not in present), key=lambda c: -SCENE_PRIORS[kind][c])
    swaps = list(zip(rng.sample(present, min(len(present), rng.randint(1, 3), len(absent))), absent))
    for old, new in swaps:
        for form_old, form_new in ((BY_NAME[old].plural, BY_NAME[new].plural), (old, new)):
            text = re.sub(rf"\b{re.escape(form_old)}\b", form_new, text, flags=re.IGNORECASE)
    return _ARTICLE.sub(_right_article, text)


def _right_article(found: re.Match) -> str:
    """"a apple" -> "an apple", keeping a capital."""
    word = article(found.group(2))
    return f"{word.capitalize() if found.group(1)[0] == 'A' else word} {found.group(2)}"


def world_calibration() -> list[CalibrationRecord]:
    """RECORDS training scenes of the world toy-llava learned, each with its two captions."""
    from halluc.world.model import TRAIN_WORLD

    records = []
    for index in range(RECORDS):
        scene = scene_at(TRAIN_WORLD, "train", index)
        rng = random.Random(index)
        good = caption(scene, rng, TRAIN_WORLD.caption_min_visibility)
        present = sorted({o.category for o in scene.visible(TRAIN_WORLD.caption_min_visibility)})
        records.append(CalibrationRecord(render_scene(scene), CHAIR_PROMPT, good,
                                         swap_objects(good, present, scene.kind, rng)))
    return records
