"""`halluc score pope`: saved answers in, POPE's metrics out (RePOPE's, with corrected labels)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from halluc.benchmarks.paths import data_home
from halluc.benchmarks.pope import scoring as pope
from halluc.benchmarks.spec import ScoreCommand, ScoreTable, metric_table
from halluc.errors import HallucError


def score(questions: Path, answers: Path, parser: str = "pope", allow_missing: bool = False,
          labels: str | None = None, allow_partial_labels: bool = False) -> dict:
    """POPE accuracy, precision, recall, F1, yes-ratio; answers matched by question_id."""
    pope.get_parser(parser)  # an unknown parser fails before any file is read
    asked, given = pope.read_pope_questions(questions), pope.read_pope_answers(answers)
    if labels is None:
        return pope.score_pope(asked, given, parser, allow_missing=allow_missing,
                               names=(str(questions), str(answers))).as_dict()
    label_file = repope_file(questions) if labels == "repope" else Path(labels)
    return pope.score_relabelled(asked, pope.read_pope_questions(label_file), given, parser,
                                 allow_missing=allow_missing, names=(str(questions), str(answers), str(label_file)),
                                 allow_partial_labels=allow_partial_labels)


def repope_file(questions: Path) -> Path:
    """The fetched RePOPE file for the split named in a POPE question file's name."""
    split = next((s for s in pope.SPLITS if Path(questions).name == f"coco_pope_{s}.json"), None)
    if split is None:
        raise HallucError(f"cannot tell the POPE split from the file name {Path(questions).name} (expected "
                          "coco_pope_{random,popular,adversarial}.json); pass --labels with the RePOPE file itself")
    path = data_home() / "repope" / pope.REPOPE_TEMPLATE.format(split)
    if not path.is_file():
        raise HallucError(f"RePOPE labels not found at {path}: run `halluc data fetch repope` (or pass --labels FILE)")
    return path


def _tables(result: dict, options: Mapping[str, Any]) -> list[ScoreTable]:
    parser, labels = options.get("parser", "pope"), options.get("labels")
    if labels is None:
        return [metric_table(f"POPE ({parser} parser)", result)]
    name = repope_file(options["questions"]).name if labels == "repope" else Path(labels).name
    return [metric_table(f"RePOPE ({parser} parser, {name})", result)]


COMMAND = ScoreCommand(score, summary=score.__doc__ or "", tables=_tables, help={
    "questions": "POPE question file (JSON lines with label).",
    "answers": "Answers: JSON lines with question_id and text.",
    "parser": "Yes/no parser: pope, opera, vcd, exact, word.",
    "allow_missing": "Score questions without an answer as unanswered instead of refusing.",
    "labels": "Corrected labels: a relabelled question file, or 'repope' (the fetched RePOPE file of the same "
              "split). Adds 'removed'.",
    "allow_partial_labels": "Accept a label file covering under 80% of the questions."})
