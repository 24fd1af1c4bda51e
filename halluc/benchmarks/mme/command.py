"""`halluc score mme`: the official eval tool's result files in, MME's scores out."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from halluc.benchmarks.mme import scoring as mme
from halluc.benchmarks.spec import ScoreCommand, ScoreTable


def score(results_dir: Path) -> dict:
    """MME acc, acc+ and score per subtask; perception, cognition and hallucination totals."""
    return mme.score_mme(mme.read_mme_results(results_dir)).as_dict()


def _tables(result: dict, options: Mapping[str, Any]) -> list[ScoreTable]:
    rows = [(name, f"{s['acc']:.2f}", f"{s['acc_plus']:.2f}", f"{s['score']:.2f}")
            for name, s in result["subtasks"].items()]
    rows += [(name, "", "", "incomplete" if result[name] is None else f"{result[name]:.2f}")
             for name in ("perception", "cognition", "hallucination")]
    return [ScoreTable("MME", ("subtask", "acc", "acc+", "score"), tuple(rows))]


COMMAND = ScoreCommand(score, summary=score.__doc__ or "", tables=_tables,
                       help={"results_dir": "Folder of eval-tool files <subtask>.txt."})
