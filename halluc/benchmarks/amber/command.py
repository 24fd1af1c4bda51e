"""`halluc score amber`: an official inference file in, AMBER's metrics out."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from halluc.benchmarks.amber import scoring as amber
from halluc.benchmarks.paths import data_home
from halluc.benchmarks.pope import scoring as pope
from halluc.benchmarks.spec import ScoreCommand, ScoreTable, metric_table
from halluc.errors import HallucError


def score(answers: Path, data: Path | None = None, parser: str = "official", extractor: str = "auto") -> dict:
    """AMBER: CHAIR, Cover, Hal, Cog; accuracy, precision, recall, F1 per dimension; AMBER Score."""
    read_as = None if parser == "official" else pope.get_parser(parser)
    folder = Path(data) if data else data_home() / "amber"
    if not (folder / "annotations.json").is_file():
        raise HallucError(f"no AMBER annotations in {folder}: run `halluc data fetch amber` or pass --data DIR")
    truth = amber.load_amber(folder, queries=False)
    return amber.score(amber.read_responses(answers), truth, amber.get_extractor(extractor, truth), read_as)


def _tables(result: dict, options: Mapping[str, Any]) -> list[ScoreTable]:
    flat = {"extractor": result["extractor"]}
    for part in ("generative", "discriminative"):
        flat.update({f"{part} {k}": v for k, v in result.get(part, {}).items()})
    if "amber_score" in result:
        flat["AMBER Score"] = result["amber_score"]
    parser = options.get("parser", "official")
    return [metric_table(f"AMBER ({result['extractor']} extractor, {parser} yes/no)", flat)]


COMMAND = ScoreCommand(score, summary=score.__doc__ or "", tables=_tables, help={
    "answers": 'Inference file: [{"id": 1, "response": ...}, ...].',
    "data": "AMBER data folder (annotations.json, relation.json, safe_words.txt) [default: the data home's amber/].",
    "parser": "Yes/no answers: official (exactly Yes/No), or a POPE parser (word, exact, pope, opera) applied first.",
    "extractor": "Nouns: auto, official (NLTK + spaCy), offline."})
