"""`halluc score chair`: saved captions in, CHAIR out."""
from __future__ import annotations

from pathlib import Path

from halluc.benchmarks.chair import scoring as chair
from halluc.benchmarks.spec import ScoreCommand, metric_table


def score(captions: Path, gt: Path, trim_incomplete: bool = False) -> dict:
    """CHAIR_S, CHAIR_I, object recall and caption length."""
    pairs = chair.read_chair_captions(captions)
    truth = chair.load_chair_gt(gt, image_ids={i for i, _ in pairs})
    return chair.score_chair(pairs, truth, trim=trim_incomplete).as_dict()


COMMAND = ScoreCommand(score, summary=score.__doc__ or "", tables=lambda result, options: [
    metric_table("CHAIR", result)], help={
    "captions": "Captions: JSON lines with image_id and caption.",
    "gt": "COCO 2014 annotation directory, or JSON {image_id: [objects]}.",
    "trim_incomplete": "Drop each caption's unfinished last sentence (64-token runs)."})
