"""HallusionBench (Guan et al., CVPR 2024): yes/no questions on charts, tables, maps, illusions, math,
OCR and video frames, asked on original and edited figures (and, for visual-supplement sets, with no
figure at all), so that a model's language prior and its reading of the image can be told apart.

Questions (tianyi-lab/HallusionBench `HallusionBench.json`, 1,129) carry category (VD visual-dependent,
VS visual-supplement), subcategory, set_id, figure_id (0 = the original or, in VS, no figure),
question_id, visual_input (0 no image, 1 original, 2 edited) and gt_answer ("1" yes, "0" no).

Correctness. The official evaluator asks GPT-4 whether each answer agrees with the reference (1),
contradicts it (0) or is unclear (2). halluc uses no judge: answers are read with VLMEvalKit's
rule-based yes/no extraction (`pope.parse_word`); agreeing -> 1, the opposite -> 0, neither -> 2.
Then the official rules, unchanged (tianyi-lab/HallusionBench utils.py):
  * correct = judged 1; on a VS question without a figure "unclear" counts as correct too
    (`assign_correctness`: not knowing a fact without its figure is no hallucination);
  * aAcc  = correct questions / questions                                      (`get_eval_all`)
  * fAcc  = figures whose questions are all correct / figures, a figure being
            category_subcategory_set_figure, VS figure 0 (no figure) left out  (`get_eval_fig`)
  * qAcc  = question pairs all correct / pairs, a pair being the same question
            (category_subcategory_set_question) over every figure              (`get_eval_pair_all`)
  * easy / hard aAcc (the leaderboard's names) = qAcc over the questions on original figures
    (visual_input 0 or 1) / on edited ones (2)                                 (`get_eval_pair_easy/hard`)
each overall and per category (VD, VS); per subcategory in the score output. The official script's
GPT-based failure analysis (language hallucination vs visual illusion) needs its judge and is not
reproduced.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from halluc.benchmarks.io import integer_id, read_jsonl_located, require, text_field
from halluc.benchmarks.pope.scoring import answer_text, parse_word
from halluc.errors import HallucError

CATEGORIES = ("VD", "VS")
_ID_FIELDS = ("category", "subcategory", "set_id", "figure_id", "question_id")


@dataclass(frozen=True)
class HBQuestion:
    category: str        # "VD" or "VS"
    subcategory: str     # chart, table, map, ocr, illusion, math, figure, video
    set_id: str
    figure_id: str
    question_id: str
    visual_input: str    # "0" no figure, "1" original figure, "2" edited figure
    question: str
    answer: bool         # gt_answer "1" = yes
    filename: str | None = None  # "./VS/chart/0_1.png" as released; None without a figure

    @property
    def key(self) -> str:
        return "_".join((self.category, self.subcategory, self.set_id, self.figure_id, self.question_id))

    @property
    def figure(self) -> str:
        return "_".join((self.category, self.subcategory, self.set_id, self.figure_id))

    @property
    def pair(self) -> str:
        return "_".join((self.category, self.subcategory, self.set_id, self.question_id))

    @property
    def set(self) -> str:
        return "_".join((self.category, self.subcategory, self.set_id))

    @property
    def has_figure(self) -> bool:
        return self.visual_input != "0"


@dataclass(frozen=True)
class Judged:
    """One answered question: the official judge's code (1 agrees, 0 contradicts, 2 unclear)."""

    question: HBQuestion
    verdict: int

    @property
    def correct(self) -> bool:
        if self.question.category == "VS" and self.question.figure_id == "0":
            return self.verdict in (1, 2)
        return self.verdict == 1


def key_of(row: Mapping, where: str) -> str:
    require(row, _ID_FIELDS, where)
    return "_".join(_id_parts(row, where))


def _id_parts(row: Mapping, where: str) -> list[str]:
    """category and subcategory as strings; set, figure and question ids as integers or digit strings ("0" and 0
    meet; 1.7, true or "²" are refused)."""
    parts = [text_field(row, f, where) for f in _ID_FIELDS[:2]]
    return parts + [str(integer_id(row[f], where, f)) for f in _ID_FIELDS[2:]]


def _code(row: Mapping, key: str, codes: tuple[str, ...], where: str) -> str:
    """A code field written as a string or an integer ("1" or 1), one of `codes`."""
    value = row[key]
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or text.strip() not in codes:
        raise HallucError(f"{where}: '{key}' must be one of {', '.join(codes)}, got {json.dumps(value)}")
    return text.strip()


def read_questions(path: str | Path) -> list[HBQuestion]:
    """The official question file (a JSON array), or any file of its rows (JSON lines too)."""
    questions, seen = [], set()
    for where, row in read_jsonl_located(path):
        require(row, (*_ID_FIELDS, "visual_input", "question", "gt_answer"), where)
        gt = _code(row, "gt_answer", ("0", "1"), where)
        filename = row.get("filename")
        if filename is not None and not isinstance(filename, str):
            raise HallucError(f"{where}: 'filename' must be a string or null, got {json.dumps(filename)}")
        category, subcategory, set_id, figure_id, question_id = _id_parts(row, where)
        q = HBQuestion(category, subcategory, set_id, figure_id, question_id,
                       visual_input=_code(row, "visual_input", ("0", "1", "2"), where),
                       question=text_field(row, "question", where), answer=gt == "1", filename=filename)
        if q.category not in CATEGORIES:
            raise HallucError(f"{where}: category must be VD or VS, got {q.category!r}")
        if q.key in seen:
            raise HallucError(f"{where}: question {q.key} appears twice")
        seen.add(q.key)
        questions.append(q)
    if not questions:
        raise HallucError(f"{path}: no questions")
    return questions


def read_predictions(path: str | Path) -> dict[str, str]:
    """A result file in the official format (question rows plus `model_prediction`; `text` also
    accepted), as a JSON array or JSON lines: {question key: answer}."""
    predictions: dict[str, str] = {}
    for where, row in read_jsonl_located(path):
        field = "model_prediction" if "model_prediction" in row or "text" not in row else "text"
        require(row, (field,), where)
        key = key_of(row, where)
        if key in predictions:
            raise HallucError(f"{where}: question {key} answered twice")
        predictions[key] = answer_text(row[field], field, where)
    if not predictions:
        raise HallucError(f"{path}: no predictions")
    return predictions


def verdict(answer: str | None, truth: bool) -> int:
    """The judge's code from VLMEvalKit's yes/no extraction: 1 agrees, 0 contradicts, 2 neither."""
    said = parse_word(answer) if answer is not None else None
    return 2 if said is None else int(said == truth)


def judge(questions: Sequence[HBQuestion], answers: Mapping[str, str | None]) -> list[Judged]:
    return [Judged(q, verdict(answers.get(q.key), q.answer)) for q in questions]


def units(judged: Iterable[Judged]) -> list[tuple[Judged, ...]]:
    """One scoring unit per question set (category_subcategory_set): every figure and every question
    pair lies inside one set, so resampled sets keep figures and pairs whole."""
    by_set: dict[str, list[Judged]] = {}
    for j in judged:
        by_set.setdefault(j.question.set, []).append(j)
    return [tuple(group) for group in by_set.values()]


def _all_right(groups: Iterable[list[bool]]) -> tuple[int, int]:
    groups = list(groups)
    return sum(all(g) for g in groups), len(groups)


def _pct(num: int, den: int) -> float:
    return 100.0 * num / den if den else 0.0


def metrics(set_units: Sequence[Sequence[Judged]]) -> dict[str, float]:
    """aAcc, fAcc, qAcc, easy/hard aAcc over units; figures and pairs are grouped within each unit, so
    a set drawn twice by the bootstrap counts twice."""
    right = total = 0
    figures: list[list[bool]] = []
    pairs: list[list[bool]] = []
    easy: list[list[bool]] = []
    hard: list[list[bool]] = []
    for unit in set_units:
        by_figure: dict[str, list[bool]] = {}
        by_pair: dict[str, list[bool]] = {}
        by_easy: dict[str, list[bool]] = {}
        by_hard: dict[str, list[bool]] = {}
        for j in unit:
            q = j.question
            right += j.correct
            total += 1
            if not (q.category == "VS" and q.figure_id == "0"):
                by_figure.setdefault(q.figure, []).append(j.correct)
            by_pair.setdefault(q.pair, []).append(j.correct)
            (by_hard if q.visual_input == "2" else by_easy).setdefault(q.pair, []).append(j.correct)
        figures += by_figure.values()
        pairs += by_pair.values()
        easy += by_easy.values()
        hard += by_hard.values()
    return {"qacc": _pct(*_all_right(pairs)), "facc": _pct(*_all_right(figures)), "aacc": _pct(right, total),
            "easy_aacc": _pct(*_all_right(easy)), "hard_aacc": _pct(*_all_right(hard)), "n": total}


def aggregate(set_units: Sequence[Sequence[Judged]]) -> dict[str, float]:
    """Overall metrics plus the VD / VS breakdown (`vd_qacc`, `vs_aacc`, ...)."""
    out = metrics(set_units)
    for category in CATEGORIES:
        mine = [u for u in set_units if u and u[0].question.category == category]
        part = metrics(mine)
        out.update({f"{category.lower()}_{k}": part[k] for k in ("qacc", "facc", "aacc")})
    return out


def score(questions: Sequence[HBQuestion], answers: Mapping[str, str], *, allow_missing: bool = False,
          names: tuple[str, str] = ("the questions", "the predictions")) -> dict:
    """Score predictions (question key -> answer). Predictions must be for known questions; questions
    without a prediction are refused unless `allow_missing`, which scores the answered ones only (the
    official evaluator aggregates exactly the rows of its result file)."""
    questions_name, answers_name = names
    known = {q.key for q in questions}
    stray = [k for k in answers if k not in known]
    if stray:
        raise HallucError(f"{len(stray)} predictions in {answers_name} are for questions not in {questions_name} "
                          f"(first: {stray[0]})")
    missing = [q.key for q in questions if q.key not in answers]
    if missing and not allow_missing:
        raise HallucError(f"{len(missing)} of the {len(questions)} questions in {questions_name} have no prediction in "
                          f"{answers_name} (first: {missing[0]}); pass --allow-missing to score the answered ones only")
    answered = [q for q in questions if q.key in answers]
    judged = judge(answered, answers)
    out: dict[str, Any] = dict(aggregate(units(judged)))
    out["unclear"] = sum(j.verdict == 2 for j in judged)
    out["subcategories"] = {}
    for category, sub in dict.fromkeys((q.category, q.subcategory) for q in answered):
        part = metrics(units(j for j in judged if (j.question.category, j.question.subcategory) == (category, sub)))
        out["subcategories"][f"{category}/{sub}"] = {k: part[k] for k in ("qacc", "facc", "aacc", "n")}
    return out
