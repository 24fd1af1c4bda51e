"""POPE (Li et al., EMNLP 2023): "Is there a {object} in the image?" yes/no polling on COCO.

Three parts, kept apart so the metric stays a pure function:
  * questions   read the official JSON-lines files (both published versions), the HF mirror
                `lmms-lab/POPE`, or build new question sets from a COCO instances file with the
                official random / popular / adversarial negative sampling;
  * parsers     the five yes/no extraction rules in circulation (`pope`, `opera`, `vcd`, `exact`, `word`);
  * scoring     `score_pope` pairs answers with questions by question_id (never by position: LLaVA's
                script pairs by position and silently mis-aligns the 2,910- and 3,000-question files).

Unparsed answers (parser returned None) and, when allowed, missing answers are counted in `unparsed`. They stay in
the denominator of accuracy and yes_ratio and count as wrong, as in the MME eval tool ("other" is
wrong), VCD's script and lmms-eval; they are left out of the confusion matrix, so precision, recall
and F1 are computed over parsed answers only (VCD's and lmms-eval's rule). The official POPE and
OPERA parsers never return None, so for them the numbers equal the official scripts' exactly.
"""
from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from halluc.benchmarks.io import integer_id, load_coco, read_jsonl_located, require, text_field
from halluc.errors import HallucError, unknown_choice

SPLITS = ("random", "popular", "adversarial")
TEMPLATE = "Is there a {} in the image?"


@dataclass(frozen=True)
class PopeQuestion:
    question_id: int | str
    image: str            # file name, e.g. COCO_val2014_000000310196.jpg
    text: str             # the question as asked
    label: bool           # True = the object is in the image ("yes")
    category: str = ""    # split name when known


# ---------------------------------------------------------------- reading questions and answers

def read_pope_questions(path: str | Path, category: str = "") -> list[PopeQuestion]:
    """Official question file: JSON lines with question_id, image, text, label ("yes"/"no").

    Works for both published versions (RUCAIBox/POPE HEAD: 3,000 per split; the LLaVA/OPERA
    version: random has 2,910). The text is kept as written, "imange" typos included.
    """
    questions, seen = [], set()
    for where, row in read_jsonl_located(path):
        require(row, ("question_id", "image", "text", "label"), where)
        qid = _question_id(row["question_id"], where)
        if qid in seen:
            raise HallucError(f"{where}: question_id {qid} appears twice")
        seen.add(qid)
        questions.append(PopeQuestion(qid, text_field(row, "image", where), text_field(row, "text", where),
                                      _label(row["label"], where), category))
    if not questions:
        raise HallucError(f"{path}: no questions")
    return questions


def read_pope_answers(path: str | Path) -> dict[int | str, str]:
    """Answer file: JSON lines with question_id and text (the model's raw answer).

    `answer` is accepted in place of `text` because the official POPE README uses it.
    A repeated question_id is an error: which of the two answers would count is ambiguous.
    A text that is not a string (null, a number, a list) is refused with its line: `str(None)` would
    read "None" and the official parser would count it as "Yes". An empty file is refused too.
    """
    answers: dict[int | str, str] = {}
    for where, row in read_jsonl_located(path):
        key = "answer" if "answer" in row and "text" not in row else "text"
        require(row, ("question_id", key), where)
        qid = _question_id(row["question_id"], where)
        if qid in answers:
            raise HallucError(f"{where}: question_id {qid} answered twice")
        answers[qid] = answer_text(row[key], key, where)
    if not answers:
        raise HallucError(f"{path}: no answers")
    return answers


def answer_text(value: Any, key: str, where: str) -> str:
    """A model's answer as read from a file: a string, or a one-line error naming the place."""
    if not isinstance(value, str):
        raise HallucError(f"{where}: '{key}' must be a string (the model's answer), got {json.dumps(value)}")
    return value


def _question_id(value: Any, where: str = "a question") -> int:
    # Answer files sometimes write ids as strings; "12" and 12 must meet. Anything else (1.7, true, "²") is refused.
    return integer_id(value, where, "question_id")


def _label(value: Any, where: str) -> bool:
    label = value.strip().lower() if isinstance(value, str) else ""
    if label not in ("yes", "no"):
        raise HallucError(f"{where}: label must be 'yes' or 'no', got {value!r}")
    return label == "yes"


# ---------------------------------------------------------------- building question sets

def coco_objects_by_image(instances_path: str | Path) -> dict[str, list[str]]:
    """Object names per image file from a COCO-format instances file (pycocotools).

    Objects are listed in order of first annotation (by annotation id), de-duplicated; POPE's
    positives are the first `n_pos` of this list, so the order is part of the construction.
    The released POPE files were built from a segmentation file that also merged objects named in
    the COCO captions (LisaAnne/Hallucination style); pass such a mapping to `build_pope` directly
    to follow that variant.
    """
    coco = load_coco(instances_path)
    if "categories" not in coco.dataset:
        raise HallucError(f"{instances_path}: not a COCO instances file (no 'categories')")
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    objects: dict[str, list[str]] = {}
    for img_id in sorted(coco.getImgIds()):
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=[img_id], iscrowd=None)), key=lambda a: a["id"])
        file_name = coco.loadImgs([img_id])[0].get("file_name", str(img_id))
        objects[file_name] = list(dict.fromkeys(names[a["category_id"]] for a in anns))
    return objects


def build_pope(objects_by_image: Mapping[str, Sequence[str]], strategy: str, *, n_images: int = 500,
               n_pos: int = 3, seed: int = 0, template: str = TEMPLATE) -> list[PopeQuestion]:
    """One POPE split, following RUCAIBox/POPE `main.py` + `utils.py:pope`.

    * keep images with at least `n_pos` objects; sample `n_images` of them (same seed -> same images
      in every split, as in the released files);
    * per image, the first `n_pos` objects are positives; after each positive one negative follows
      (labels yes, no, yes, no, ...), never an object of the image nor one already asked:
        random       uniform over the objects seen in the sampled images,
        popular      the most frequent such objects first,
        adversarial  the objects most often co-occurring with that positive first;
      popular / adversarial fall back to random when their list is exhausted.
    Deterministic for a given seed (the official script used the global `random` unseeded).
    """
    if strategy not in SPLITS:
        raise unknown_choice("POPE strategy", strategy, SPLITS)
    rng = random.Random(seed)
    images = _sample_images(objects_by_image, n_images, n_pos, rng)
    pool = Counter(o for objs in images.values() for o in dict.fromkeys(objs))
    ranked = {"popular": [o for o, _ in pool.most_common()], "adversarial": _co_occurrence(images)}
    questions: list[PopeQuestion] = []
    for image, objects in images.items():
        asked: list[str] = []
        for pos in objects[:n_pos]:
            asked.append(pos)
            neg = _negative(strategy, pos, objects, asked, pool, ranked, rng, image)
            asked.append(neg)
            for obj, label in ((pos, True), (neg, False)):
                questions.append(PopeQuestion(len(questions) + 1, image, _ask(template, obj), label, strategy))
    return questions


def build_pope_from_coco(instances_path: str | Path, strategy: str, **kwargs: Any) -> list[PopeQuestion]:
    """`build_pope` on the objects of a COCO instances file (e.g. instances_val2014.json)."""
    return build_pope(coco_objects_by_image(instances_path), strategy, **kwargs)


def _sample_images(objects_by_image, n_images, n_pos, rng) -> dict[str, list[str]]:
    distinct = ((img, list(dict.fromkeys(objs))) for img, objs in objects_by_image.items())
    eligible = [(img, objs) for img, objs in distinct if len(objs) >= n_pos]
    if len(eligible) < n_images:
        raise HallucError(f"only {len(eligible)} images have at least {n_pos} objects; "
                          f"cannot sample {n_images}")
    return dict(rng.sample(eligible, n_images))


def _co_occurrence(images: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    # For each object, the others ranked by how many sampled images hold both (ties: first seen).
    counts: dict[str, Counter] = {}
    for objects in images.values():
        objects = list(dict.fromkeys(objects))
        for o in objects:
            counts.setdefault(o, Counter()).update(x for x in objects if x != o)
    return {o: [x for x, _ in c.most_common()] for o, c in counts.items()}


def _negative(strategy, pos, objects, asked, pool, ranked, rng, image) -> str:
    banned = set(objects) | set(asked)
    if strategy != "random":
        order = ranked["popular"] if strategy == "popular" else ranked["adversarial"].get(pos, [])
        for candidate in order:
            if candidate not in banned:
                return candidate
    candidates = [o for o in pool if o not in banned]
    if not candidates:
        raise HallucError(f"no negative object left for {image}: every sampled object is in it or asked")
    return rng.choice(candidates)


def _ask(template: str, obj: str) -> str:
    # The official create_question replaced *every* "a" of the template by "an" before a vowel,
    # which produced the "imange" typos of the early files; only the article changes here.
    if obj[:1].lower() in "aeiou":
        template = template.replace("a {}", "an {}")
    return template.format(obj)


# ---------------------------------------------------------------- parsers: text -> True (yes) / False (no) / None

def parse_pope(text: str) -> bool:
    """Official POPE `evaluate.py` and LLaVA `eval_pope.py`: first sentence, commas removed,
    split on single spaces; "No", "no" or "not" as a token -> no, anything else -> yes.
    Case-sensitive on purpose ("NO" and "Not" read as yes), exactly like the reference."""
    first = text.split(".")[0]
    words = first.replace(",", "").split(" ")
    return not any(w in ("No", "no", "not") for w in words)


def parse_opera(text: str) -> bool:
    """OPERA/HALC `recorder`: whole answer, "." and "," removed, split on single spaces;
    No/no/NO/not or a word ending in "n't" -> no, anything else -> yes."""
    words = text.replace(".", "").replace(",", "").split(" ")
    return not any(w in ("No", "no", "NO", "not") or w.endswith("n't") for w in words)


def parse_vcd(text: str) -> bool | None:
    """VCD `eval_pope.py`, label-free half: lower-cased substrings "yes" / "no".

    VCD grades asymmetrically (label yes: right iff "yes" occurs; label no: right iff "no" occurs,
    so "not", "nothing" and "know" count as no). Alone, an answer with both or neither substring is
    ambiguous -> None; `score_pope(..., "vcd")` resolves those against the label as VCD does.
    """
    low = text.strip().lower()
    has_yes, has_no = "yes" in low, "no" in low
    return None if has_yes == has_no else has_yes


def vcd_prediction(text: str, label: bool) -> bool:
    """VCD's verdict given the label: the predicted answer its script implies."""
    low = text.strip().lower()
    return ("yes" in low) if label else ("no" not in low)


def parse_exact(text: str) -> bool | None:
    """lmms-eval: the whole answer, stripped and lower-cased, must be exactly "yes" or "no"."""
    low = text.strip().lower()
    return {"yes": True, "no": False}.get(low)


def parse_word(text: str) -> bool | None:
    """VLMEvalKit `YOrN_Extraction` (vlmeval/dataset/utils/yorn.py), rule for rule: lower-case, its
    punctuation clean-up (`process_punctuation`), split on whitespace; "yes" xor "no" as a word, else
    None ("Unknown", which VLMEvalKit hands to a GPT judge when one is configured; halluc has none)."""
    words = _vlmevalkit_punctuation(text.lower()).split()
    has_yes, has_no = "yes" in words, "no" in words
    return None if has_yes == has_no else has_yes


_VLMEVALKIT_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
                     "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_LONE_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")


def _vlmevalkit_punctuation(text: str) -> str:
    """VLMEvalKit's `process_punctuation`: each mark is deleted where it touches a space in the original
    text (or everywhere once a digit,digit comma occurs), else replaced by a space; then periods not
    next to a digit are deleted. Its `re.sub(..., re.UNICODE)` passes the flag as the count, so only
    the first 32 such periods go; kept here because it decides a few long answers."""
    out = text
    numeric_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in _VLMEVALKIT_PUNCT:
        touches_space = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if touches_space or numeric_comma else " ")
    return _LONE_PERIOD.sub("", out, count=int(re.UNICODE))


PARSERS: Mapping[str, Callable[[str], bool | None]] = MappingProxyType({
    "pope": parse_pope, "opera": parse_opera, "vcd": parse_vcd, "exact": parse_exact, "word": parse_word,
})
# Parsers whose verdict depends on the label (see parse_vcd).
_LABEL_AWARE: Mapping[str, Callable[[str, bool], bool]] = MappingProxyType({"vcd": vcd_prediction})


def get_parser(name: str) -> Callable[[str], bool | None]:
    """A parser by name; an unknown name lists the choices."""
    if name not in PARSERS:
        raise unknown_choice("parser", name, PARSERS)
    return PARSERS[name]


# ---------------------------------------------------------------- protocol presets

class _ReadOnlyDict(dict):
    """A dict that refuses changes, so a shared preset cannot be edited by accident.
    Unlike MappingProxyType it still pickles, deep-copies and serialises as JSON."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("protocol settings are read-only; copy them with dict(...) first")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self):
        return type(self), (dict(self),)


@dataclass(frozen=True)
class PopeProtocol:
    """How a paper family ran POPE: what to append to the question, how to decode, how to parse."""

    name: str
    prompt_suffix: str
    decoding: Mapping[str, Any] = field(hash=False)   # generate() kwargs
    parser: str
    headline: str                 # the metric the family reports first
    question_set: str             # "coco_2910" (RUCAIBox/POPE e3e3926) or "coco" (3,000 per split)
    source: str

    def prompt(self, question: str) -> str:
        return question + self.prompt_suffix


PROTOCOLS: Mapping[str, PopeProtocol] = MappingProxyType({p.name: p for p in (
    PopeProtocol("llava", "\nAnswer the question using a single word or phrase.",
                 _ReadOnlyDict(do_sample=False, max_new_tokens=128), "pope", "f1", "coco_2910",
                 "haotian-liu/LLaVA scripts/v1_5/eval/pope.sh; mean F1 over the three splits"),
    PopeProtocol("vcd", " Please answer this question with one word.",
                 _ReadOnlyDict(do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=1024),
                 "vcd", "accuracy", "coco",
                 "DAMO-NLP-SG/VCD experiments/eval/object_hallucination_vqa_llava.py + eval_pope.py"),
    PopeProtocol("opera", "", _ReadOnlyDict(num_beams=5, max_new_tokens=10), "opera", "f1",
                 "coco_2910", "shikiw/OPERA pope_eval.py (raw question, beam 5)"),
)})


def get_protocol(name: str) -> PopeProtocol:
    if name not in PROTOCOLS:
        raise unknown_choice("POPE protocol", name, PROTOCOLS)
    return PROTOCOLS[name]


# ---------------------------------------------------------------- scoring

@dataclass(frozen=True)
class PopeScores:
    """Percentages 0-100 except the counts. yes_ratio is of predictions, over all n questions."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float
    unparsed: int
    n: int
    tp: int
    fp: int
    tn: int
    fn: int

    def as_dict(self) -> dict[str, float | int]:
        keys = ("accuracy", "precision", "recall", "f1", "yes_ratio", "unparsed", "n")
        return {k: getattr(self, k) for k in keys}


def pope_metrics(preds: Sequence[bool | None], labels: Sequence[bool]) -> PopeScores:
    """Metrics from predictions (True yes / False no / None unparsed) and labels (True yes).

    A ratio with an empty denominator is 0 rather than an exception (the official script crashes).
    """
    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions for {len(labels)} labels")
    return pair_metrics(Counter(zip(preds, labels)), len(labels))


def pair_metrics(pairs: Mapping[tuple, int], n: int) -> PopeScores:
    """`pope_metrics` from the counts of each (prediction, label) pair among n questions."""
    tp, fp = pairs[(True, True)], pairs[(True, False)]
    tn, fn = pairs[(False, False)], pairs[(False, True)]
    precision, recall = _pct(tp, tp + fp), _pct(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PopeScores(accuracy=_pct(tp + tn, n), precision=precision, recall=recall, f1=f1,
                      yes_ratio=_pct(tp + fp, n), unparsed=n - (tp + fp + tn + fn), n=n,
                      tp=tp, fp=fp, tn=tn, fn=fn)


def score_pope(questions: Sequence[PopeQuestion], answers: Mapping[int | str, str],
               parser: str | Callable[[str], bool | None] = "pope", *, allow_missing: bool = False,
               names: tuple[str, str] = ("the question set", "the answers")) -> PopeScores:
    """Score answers (question_id -> raw text) against questions, matched by question_id.

    Answers must cover exactly the question set: an answer to an unknown question_id is an error,
    and so is a question without an answer unless `allow_missing` (then it counts as unparsed).
    Both almost always mean the 2,910- and 3,000-question files were mixed: ids 1..2,910 exist in
    both, so answers for the short file leave 90 questions of the long one unanswered and are
    matched to other questions, which gave F1 52 with only "unparsed 90" as a hint.
    `names` (question file, answer file) make the error name the files.
    """
    ids = [_question_id(q.question_id) for q in questions]
    if len(set(ids)) != len(ids):
        raise HallucError("the question set repeats a question_id")
    answers = {_question_id(k): v for k, v in answers.items()}
    check_coverage(ids, answers, allow_missing=allow_missing, names=names)
    predict = predictor(parser)
    preds = [predict(answers[qid], q.label) if qid in answers else None for qid, q in zip(ids, questions)]
    return pope_metrics(preds, [q.label for q in questions])


def check_coverage(question_ids: Sequence[int | str], answers: Mapping[int | str, Any], *,
                   allow_missing: bool = False, names: tuple[str, str] = ("the question set", "the answers")) -> None:
    """One line naming the mismatch in both directions, or nothing when answers and questions match."""
    questions_name, answers_name = names
    known = set(question_ids)
    stray = [qid for qid in answers if qid not in known]
    missing = [qid for qid in question_ids if qid not in answers]
    hint = "mixed POPE versions (2,910 vs 3,000 questions)?"
    if stray:
        also = (f", and {len(missing)} of its {len(question_ids)} questions have no answer (first: {missing[0]})"
                if missing else "")
        raise HallucError(f"{len(stray)} answers in {answers_name} have question_ids that {questions_name} does not "
                          f"have (first: {stray[0]}){also}: {hint}")
    if missing and not allow_missing:
        raise HallucError(f"{len(missing)} of the {len(question_ids)} questions in {questions_name} have no answer in "
                          f"{answers_name} (first: {missing[0]}): {hint} Pass --allow-missing to count them as "
                          "unanswered (wrong)")


# ---------------------------------------------------------------- RePOPE: the same questions, corrected labels

REPOPE_TEMPLATE = "coco_repope_{}.json"


def relabel(questions: Sequence[PopeQuestion], relabelled: Sequence[PopeQuestion],
            names: tuple[str, str] = ("the POPE questions", "the relabelled file")) -> tuple[list[PopeQuestion], list]:
    """RePOPE (Neuhaus & Hein, 2025) on a POPE question set: the questions it keeps, with its labels,
    and the ids of those it removed (ambiguous ones).

    Every relabelled question must be one of `questions`, same image and same text: RePOPE relabels the
    3,000-question files, and the 2,910-question version differs in ids and in "imange" typos.
    """
    questions_name, labels_name = names
    by_id = {_question_id(q.question_id): q for q in questions}
    for q in relabelled:
        original = by_id.get(_question_id(q.question_id))
        if original is None or (original.image, original.text) != (q.image, q.text):
            seen = "is not in it" if original is None else f"is {original.text!r} on {original.image} there"
            raise HallucError(f"{labels_name} relabels another question set than {questions_name}: question "
                              f"{q.question_id} ({q.text!r} on {q.image}) {seen}; RePOPE relabels the "
                              "3,000-question POPE files (RUCAIBox/POPE output/coco)")
    labels = {_question_id(q.question_id): q.label for q in relabelled}
    kept = [replace(q, label=labels[qid]) for qid, q in by_id.items() if qid in labels]
    removed = [qid for qid in by_id if qid not in labels]
    return kept, removed


# a label file must relabel at least this share of the questions asked (RePOPE keeps 89-92% of each split);
# one covering far fewer is almost always another or a truncated file, refused unless allowed
MIN_LABEL_COVERAGE = 0.8


def check_label_coverage(asked: int, relabelled: int, labels_name: str, allow_partial: bool = False) -> None:
    """Refuse a label file covering far fewer questions than were asked, unless `allow_partial`."""
    if not allow_partial and relabelled < MIN_LABEL_COVERAGE * asked:
        raise HallucError(f"{labels_name} relabels {relabelled} of the {asked} questions asked (under "
                          f"{MIN_LABEL_COVERAGE:.0%}): another or a truncated label file? Pass --allow-partial-labels "
                          "to score the rest as removed")


def score_relabelled(questions: Sequence[PopeQuestion], relabelled: Sequence[PopeQuestion],
                     answers: Mapping[int | str, str], parser: str | Callable[[str], bool | None] = "pope", *,
                     allow_missing: bool = False, names: tuple[str, str, str] | None = None,
                     allow_partial_labels: bool = False) -> dict:
    """POPE metrics of the same answers against corrected labels, plus `removed` (questions dropped).

    Answers are checked against the original question set (the one the model was asked), so an
    answer to a removed question is expected, not an error. `names`: question, answer, label files.
    """
    questions_name, answers_name, labels_name = names or ("the POPE questions", "the answers", "the labels")
    answers = {_question_id(k): v for k, v in answers.items()}
    check_coverage([_question_id(q.question_id) for q in questions], answers, allow_missing=allow_missing,
                   names=(questions_name, answers_name))
    kept, removed = relabel(questions, relabelled, (questions_name, labels_name))
    check_label_coverage(len(questions), len(kept), labels_name, allow_partial_labels)
    kept_ids = {q.question_id for q in kept}
    scores = score_pope(kept, {k: v for k, v in answers.items() if k in kept_ids}, parser, allow_missing=True)
    return {**scores.as_dict(), "removed": len(removed)}


def predictor(parser: str | Callable[[str], bool | None]) -> Callable[[str, bool], bool | None]:
    """(answer text, label) -> predicted yes/no or None, for a parser name or a plain parser.

    The label is only consulted by label-aware parsers (VCD's asymmetric rule).
    """
    if callable(parser):
        return lambda text, _label: parser(text)
    get_parser(parser)
    if parser in _LABEL_AWARE:
        return _LABEL_AWARE[parser]
    return lambda text, _label: PARSERS[parser](text)


def _pct(num: int, den: int) -> float:
    return 100.0 * num / den if den else 0.0
