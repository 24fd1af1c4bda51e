"""MME (Fu et al., 2023): 14 yes/no subtasks, two questions per image (one "Yes", one "No").

Per subtask (BradyFU/Awesome-Multimodal-Large-Language-Models, branch Evaluation, eval_tool/calculation.py):
    acc   = questions answered right / questions           (an unparsed answer is wrong)
    acc+  = images with both questions right / images
    score = 100 * acc + 100 * acc+                         (0-200)
Perception = sum of the 10 perception scores (max 2,000), cognition = sum of 4 (max 800).
Hallucination = existence + count + position + color (max 800), the subset VCD/RITUAL report.

Responses are read from the eval tool's result files: `image \\t question \\t ground truth \\t response`,
one file per subtask named `<subtask>.txt`, the two questions of an image on adjacent lines.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from halluc.benchmarks.io import read_text
from halluc.errors import HallucError
from halluc.safe_paths import name_component

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
              "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
HALLUCINATION = ("existence", "count", "position", "color")
SUBTASKS = PERCEPTION + COGNITION

OFFICIAL_SUFFIX = " Please answer yes or no."
# LLaVA-1.5 (scripts/v1_5/eval/mme.sh) and lmms-eval replace the official suffix by this one.
LLAVA_SUFFIX = "\nAnswer the question using a single word or phrase."
_IMAGE_EXTS = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class MMEItem:
    subtask: str
    image: str               # image path relative to the subtask folder (as in the result files)
    question: str
    answer: bool             # ground truth: True = "Yes"
    response: str | None = None
    image_path: str = ""     # where the image file is, when read from the image release


def llava_prompt(question: str) -> str:
    """The LLaVA variant of an MME question (official suffix swapped for LLaVA's)."""
    if question.endswith(OFFICIAL_SUFFIX):
        return question[: -len(OFFICIAL_SUFFIX)] + LLAVA_SUFFIX
    return question + LLAVA_SUFFIX


# ---------------------------------------------------------------- parser and scoring (pure)

def parse_mme(response: str) -> bool | None:
    """Official `parse_pred_ans`: lower-case; exactly yes/no, else "yes" / "no" within the first
    4 characters (yes checked first), else unparsed ("other" in the eval tool)."""
    low = response.lower()
    if low in ("yes", "no"):
        return low == "yes"
    head = low[:4]
    if "yes" in head:
        return True
    if "no" in head:
        return False
    return None


@dataclass(frozen=True)
class MMESubtaskScore:
    """acc and acc_plus in percent (0-100); score = acc + acc_plus (0-200)."""

    acc: float
    acc_plus: float
    score: float
    n: int           # questions
    other: int       # unparsed responses

    def as_dict(self) -> dict[str, float]:
        return {"acc": self.acc, "acc_plus": self.acc_plus, "score": self.score}


def score_mme_subtask(items: Sequence[MMEItem]) -> MMESubtaskScore:
    """Score one subtask. Items come in image pairs on adjacent positions, as in the result files."""
    if not items or len(items) % 2:
        name = items[0].subtask if items else "?"
        raise HallucError(f"MME {name}: {len(items)} questions; expected two per image")
    pairs = range(0, len(items), 2)
    for i in pairs:   # the eval tool pairs by position; a shuffled file would pair wrong questions
        if items[i].image != items[i + 1].image:
            raise HallucError(f"MME {items[i].subtask}: questions {i + 1} and {i + 2} should be the pair "
                              f"of one image, got {items[i].image} and {items[i + 1].image}")
    preds = [parse_mme(item.response or "") for item in items]
    right = [pred == item.answer for pred, item in zip(preds, items)]   # None ("other") is never right
    acc = 100.0 * sum(right) / len(items)
    acc_plus = 100.0 * sum(right[i] and right[i + 1] for i in pairs) / len(pairs)
    return MMESubtaskScore(acc, acc_plus, acc + acc_plus, len(items), preds.count(None))


@dataclass(frozen=True)
class MMEScores:
    """Per-subtask scores and the three totals; a total is None unless all its subtasks are present
    (the eval tool silently prints partial sums when files are missing)."""

    subtasks: Mapping[str, MMESubtaskScore]
    perception: float | None
    cognition: float | None
    hallucination: float | None

    def as_dict(self) -> dict:
        return {"subtasks": {k: v.as_dict() for k, v in self.subtasks.items()},
                "perception": self.perception, "cognition": self.cognition,
                "hallucination": self.hallucination}


def score_mme(results: Mapping[str, Sequence[MMEItem]]) -> MMEScores:
    """Score every subtask present and the totals that are complete."""
    unknown = [name for name in results if name not in SUBTASKS]
    if unknown:
        raise HallucError(f"unknown MME subtask '{unknown[0]}'; subtasks: {', '.join(SUBTASKS)}")
    scores = {name: score_mme_subtask(results[name]) for name in SUBTASKS if name in results}

    def total(group: tuple[str, ...]) -> float | None:
        return sum(scores[n].score for n in group) if all(n in scores for n in group) else None

    return MMEScores(scores, total(PERCEPTION), total(COGNITION), total(HALLUCINATION))


# ---------------------------------------------------------------- reading files

def read_mme_results(results_dir: str | Path) -> dict[str, list[MMEItem]]:
    """Eval-tool result files `<subtask>.txt` in a directory (other files are ignored)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise HallucError(f"{results_dir}: not a directory")
    found = {name: results_dir / f"{name}.txt" for name in SUBTASKS if (results_dir / f"{name}.txt").is_file()}
    if not found:
        raise HallucError(f"{results_dir}: no MME result files (expected e.g. existence.txt, OCR.txt)")
    results = {name: read_mme_result_file(path, name) for name, path in found.items()}
    silent = [name for name, items in results.items() if items and not any(it.response for it in items)]
    if silent:   # the question lists themselves (3 columns) would otherwise score 0 everywhere
        shown = ", ".join(f"{name}.txt" for name in silent[:3]) + (f" and {len(silent) - 3} more" if len(silent) > 3
                                                                   else "")
        raise HallucError(f"{results_dir}: {shown} hold no responses (a fourth tab-separated column with the "
                          "model's answers); are these the question lists rather than results?")
    return results


def read_mme_result_file(path: str | Path, subtask: str) -> list[MMEItem]:
    """One result file: image, question, ground truth, response, tab-separated.

    A tab inside the response is kept as part of it, and a line with only three fields is a
    missing (empty) response; the eval tool crashes on both.
    """
    items = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t", 3)
        if len(fields) < 3:
            raise HallucError(f"{path}:{lineno}: expected image<TAB>question<TAB>answer<TAB>response")
        response = fields[3] if len(fields) == 4 else ""
        items.append(MMEItem(subtask, fields[0], fields[1], _gt(fields[2], f"{path}:{lineno}"), response))
    return items


def read_mme_release(root: str | Path, subtasks: Iterable[str] = SUBTASKS) -> list[MMEItem]:
    """Questions from the official image release `MME_Benchmark_release_version/`.

    Two layouts occur: flat (`<subtask>/<name>.jpg` beside `<subtask>/<name>.txt`) and split
    (`<subtask>/images/<name>.jpg` with `<subtask>/questions_answers_YN/<name>.txt`). Each .txt
    holds `question \\t answer` lines. Images are returned as in the result files: the bare
    file name.
    """
    root = Path(root)
    if not root.is_dir():
        raise HallucError(f"{root}: not a directory")
    items = []
    for subtask in subtasks:
        if subtask not in SUBTASKS:
            raise HallucError(f"unknown MME subtask '{subtask}'; subtasks: {', '.join(SUBTASKS)}")
        folder = root / subtask
        if not folder.is_dir():
            raise HallucError(f"{folder}: missing subtask folder")
        items += _read_subtask_release(folder, subtask)
    return items


def _read_subtask_release(folder: Path, subtask: str) -> list[MMEItem]:
    split = (folder / "questions_answers_YN").is_dir()
    qa_dir, img_dir = (folder / "questions_answers_YN", folder / "images") if split else (folder, folder)
    items = []
    for qa in sorted(qa_dir.glob("*.txt")):
        image = next((img_dir / (qa.stem + ext) for ext in _IMAGE_EXTS if (img_dir / (qa.stem + ext)).exists()), None)
        if image is None:
            raise HallucError(f"{qa}: no image {qa.stem}.jpg/.png beside it")
        for lineno, line in enumerate(read_text(qa).splitlines(), 1):
            if line.strip():
                question, _, answer = line.rpartition("\t")
                if not question:
                    raise HallucError(f"{qa}:{lineno}: expected question<TAB>answer")
                items.append(MMEItem(subtask, image.name, question, _gt(answer, f"{qa}:{lineno}"),
                                     image_path=str(image)))
    if not items:
        raise HallucError(f"{folder}: no question files")
    return items


def write_mme_results(items: Iterable[MMEItem], out_dir: str | Path) -> list[Path]:
    """Write eval-tool result files (one per subtask); responses are flattened to one line."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_task: dict[str, list[str]] = {}
    for it in items:
        response = " ".join((it.response or "").split())  # the tool reads one line per question
        by_task.setdefault(it.subtask, []).append(
            f"{it.image}\t{it.question}\t{'Yes' if it.answer else 'No'}\t{response}\n")
    paths = []
    for subtask, lines in by_task.items():
        path = out_dir / name_component(f"{subtask}.txt", "MME subtask")
        path.write_text("".join(lines), encoding="utf-8")
        paths.append(path)
    return paths


def _gt(value: str, where: str) -> bool:
    label = value.strip().lower()
    if label not in ("yes", "no"):
        raise HallucError(f"{where}: ground truth must be Yes or No, got {value!r}")
    return label == "yes"
