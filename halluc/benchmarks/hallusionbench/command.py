"""`halluc score hallusionbench`: a result file in the official format in, qAcc / fAcc / aAcc out."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from halluc.benchmarks.hallusionbench import scoring as hallusionbench
from halluc.benchmarks.spec import ScoreCommand, ScoreTable, metric_table


def score(answers: Path, questions: Path | None = None, allow_missing: bool = False) -> dict:
    """qAcc, fAcc, aAcc (official aggregation; VLMEvalKit's yes/no extraction, no GPT judge)."""
    given = hallusionbench.read_predictions(answers)
    source = questions or answers
    return hallusionbench.score(hallusionbench.read_questions(source), given, allow_missing=allow_missing,
                                names=(str(source), str(answers)))


def _tables(result: dict, options: Mapping[str, Any]) -> list[ScoreTable]:
    overall = {k: v for k, v in result.items() if k != "subcategories"}
    rows = tuple((name, *(f"{part[k]:.2f}" for k in ("qacc", "facc", "aacc")), str(part["n"]))
                 for name, part in result["subcategories"].items())
    return [metric_table("HallusionBench (VLMEvalKit yes/no extraction)", overall),
            ScoreTable("per subcategory", ("subcategory", "qAcc", "fAcc", "aAcc", "n"), rows)]


COMMAND = ScoreCommand(score, summary=score.__doc__ or "", tables=_tables, help={
    "answers": "Result file in the official format (question rows with model_prediction), JSON array or lines.",
    "questions": "HallusionBench.json, for the ground truth when the result file has no gt_answer [default: the "
                 "result file itself].",
    "allow_missing": "Score only the answered questions (e.g. a released sample)."})
