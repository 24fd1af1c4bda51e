"""Benchmarks from their maintained HF datasets (`--source hf`), as an alternative to local files.

A dataset is read once with `datasets` (`load_dataset(id, config, revision=..., split=...)` for the
hub, `load_from_disk` for a saved copy) and written out in the benchmark's own local layout under
the data home: question files in the official format, and every image with the bytes the dataset
stores. The ordinary task then runs on those files, so both sources give identical samples (same
ids, prompts, targets and image files), and the Runner fingerprints the images as usual.

Every row is checked before anything is written: a field that names a path (POPE's image_source, MME's
category and question_id, HallusionBench's filename) must stay inside the folder, and an image cell must
hold bytes, not name a local file. The folder is written into a staging folder, renamed into place whole,
and reused offline afterwards.

Pinned revisions (override with `--data ID@REVISION`, or `--data DIR` for a dataset saved with
`save_to_disk`); the dataset id and revision go into config.json.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from halluc.benchmarks.paths import data_home
from halluc.errors import HallucError
from halluc.safe_paths import IMAGE_SUFFIXES, confined, name_component, relative_parts


@dataclass(frozen=True)
class HFSource:
    dataset: str
    revision: str
    config: str | None
    splits: tuple[str, ...]
    note: str = ""


SOURCES: Mapping[str, HFSource] = {
    # the 3,000-question POPE files (RUCAIBox/POPE output/coco), one split per POPE split
    "pope": HFSource("lmms-lab/POPE", "4db1276663dfa5eb8ad16a52d24c31a09e470896", "Full",
                     ("random", "popular", "adversarial"), "the 3,000-question version"),
    "mme": HFSource("lmms-lab/MME", "d6c9023f017b564f7b3ccccf5348166bce8fdbcd", None, ("test",)),
    "hallusionbench": HFSource("lmms-lab/HallusionBench", "ea5fd49f1b711d12cc8b0ec75be0c0593e17befe", None,
                               ("image",), "the 951 questions with a figure"),
}


@dataclass(frozen=True)
class Materialized:
    data: Path       # what the task's --data expects
    images: Path     # what the task's --images expects
    provenance: dict


def has_source(benchmark: str) -> bool:
    return benchmark in SOURCES


def materialize(benchmark: str, where: str | Path | None = None, home: Path | None = None) -> Materialized:
    """The benchmark's files from an HF dataset: the pinned hub revision, `ID[@REVISION]`, or a saved folder."""
    if benchmark not in SOURCES:
        raise HallucError(f"{benchmark} has no HF dataset source; choices: {', '.join(SOURCES)} (pass --images DIR)")
    pinned = SOURCES[benchmark]
    local = where is not None and Path(where).exists()
    if local:
        dataset_id, revision = str(Path(where).resolve()), _folder_digest(Path(where))
    else:
        dataset_id, _, revision = str(where or pinned.dataset).partition("@")
        revision = revision or (pinned.revision if dataset_id == pinned.dataset else "main")
    provenance = {"source": "hf", "dataset": dataset_id, "revision": revision, "config": pinned.config}
    key = hashlib.sha256(json.dumps([benchmark, dataset_id, revision]).encode()).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(dataset_id).name)
    root = Path(home or data_home()) / "hf" / benchmark / f"{readable}-{key}"
    if not (root / "complete").exists():
        splits = {split: _load(dataset_id, revision, pinned, split, local) for split in pinned.splits}
        plan = _PLANNERS[benchmark](splits)  # every row checked before anything is written
        _write_whole(plan, provenance, root)
    data, images = _LAYOUT[benchmark](root)
    return Materialized(data, images, provenance)


def _write_whole(plan: _Plan, provenance: dict, root: Path) -> None:
    """Write into a staging folder beside `root` and rename it into place: a failure or a kill leaves no
    half-written benchmark folder (a leftover staging folder is removed by the next attempt)."""
    staging = root.with_name(f".{root.name}.partial")
    for leftover in (staging, root):
        if leftover.exists():
            shutil.rmtree(leftover)  # a killed earlier write: redo it whole
    staging.mkdir(parents=True)
    try:
        plan.write(staging)
        (staging / "provenance.json").write_text(json.dumps(provenance, indent=1), encoding="utf-8")
        (staging / "complete").touch()
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _load(dataset_id: str, revision: str, pinned: HFSource, split: str, local: bool):
    import datasets  # heavy; only here

    try:
        if local:
            saved = datasets.load_from_disk(dataset_id)
            if isinstance(saved, datasets.DatasetDict):
                if split not in saved:
                    raise HallucError(f"{dataset_id}: saved dataset has splits {', '.join(saved)}, not '{split}'")
                saved = saved[split]
            ds = saved
        else:
            ds = datasets.load_dataset(dataset_id, pinned.config, revision=revision, split=split)
    except HallucError:
        raise
    except Exception as err:  # network, missing revision, wrong schema: one line, never a traceback
        raise HallucError(f"cannot load the HF dataset {dataset_id}@{revision} split '{split}' "
                          f"({err.__class__.__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}); "
                          "offline? pass --images DIR with local files, or --source hf --data DIR with a saved "
                          "copy") from None
    if "image" in ds.column_names:
        ds = ds.cast_column("image", datasets.Image(decode=False))  # keep the stored bytes exactly
    return ds


def _folder_digest(folder: Path) -> str:
    """A saved dataset's content digest: its arrow files' names and sizes (cheap, changes with the data)."""
    parts = sorted(f"{p.relative_to(folder)}:{p.stat().st_size}" for p in folder.rglob("*") if p.is_file())
    return "local-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _require(ds, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise HallucError(f"{what}: the dataset has no column '{missing[0]}' (columns: {', '.join(ds.column_names)})")


def _image_bytes(image: Any, what: str) -> bytes:
    """The bytes an image cell stores. A cell that only names a file is refused: a dataset never chooses a
    local file of the user's for halluc to copy."""
    if not isinstance(image, Mapping):
        raise HallucError(f"{what}: the image cell is not an image ({type(image).__name__})")
    data = image.get("bytes")
    if isinstance(data, (bytes, bytearray)) and data:
        return bytes(data)
    if image.get("path"):
        raise HallucError(f"{what}: the image cell names a file ({str(image['path'])[:80]!r}) instead of holding its "
                          "bytes; halluc reads only images stored in the dataset (save it with the images embedded)")
    raise HallucError(f"{what}: no image data")


def _suffix(data: bytes, default: str = ".png") -> str:
    """The stored image's format as a file suffix (dataset rows do not always name their files)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return {"JPEG": ".jpg", "PNG": ".png"}.get(img.format or "", default)
    except (UnidentifiedImageError, OSError):
        return default


@dataclass
class _Plan:
    """What a writer will create under the benchmark's root, checked in full before anything is written:
    relative path -> file bytes (image bytes, or a question file's text)."""

    files: dict[tuple[str, ...], bytes] = field(default_factory=dict)

    def image(self, parts: tuple[str, ...], cell: Any, what: str) -> None:
        if parts not in self.files:  # an image shared by several questions is written once
            self.files[parts] = _image_bytes(cell, what)

    def text(self, parts: tuple[str, ...], lines: list[str]) -> None:
        self.files[parts] = ("\n".join(lines) + "\n").encode("utf-8")

    def write(self, root: Path) -> None:
        for parts, data in self.files.items():
            path = confined(root, "/".join(parts), "output file")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


# ---------------------------------------------------------------- per benchmark: HF schema -> local layout

def _plan_pope(splits: Mapping[str, Any]) -> _Plan:
    """lmms-lab/POPE (question_id, question, answer, image_source, image, category) -> coco_pope_{split}.json,
    images/<image_source>.jpg (image_source must be a plain name: it is COCO's file stem)."""
    plan = _Plan()
    for split, ds in splits.items():
        _require(ds, ("question_id", "question", "answer", "image_source", "image"), f"POPE {split}")
        lines = []
        for n, row in enumerate(ds):
            where = f"POPE {split} row {n}"
            image = name_component(f"{name_component(row['image_source'], where + ' image_source')}.jpg", where)
            plan.image(("images", image), row["image"], where)
            lines.append(json.dumps({"question_id": row["question_id"], "image": image, "text": row["question"],
                                     "label": str(row["answer"]).strip().lower()}))
        plan.text((f"coco_pope_{split}.json",), lines)
    return plan


def _plan_mme(splits: Mapping[str, Any]) -> _Plan:
    """lmms-lab/MME (question_id = subtask/image file, image, question, answer, category) -> the release
    layout: <category>/<image> beside <category>/<stem>.txt with `question<TAB>answer` lines."""
    (ds,) = splits.values()
    _require(ds, ("question_id", "question", "answer", "category", "image"), "MME")
    plan, questions = _Plan(), {}
    for n, row in enumerate(ds):
        where = f"MME row {n}"
        category = name_component(row["category"], where + " category")
        name = name_component(PurePosixPath(str(row["question_id"])).name, where + " question_id")
        stem = PurePosixPath(name).stem
        suffix = PurePosixPath(name).suffix or _suffix(_image_bytes(row["image"], where))
        if suffix.lower() not in IMAGE_SUFFIXES:
            raise HallucError(f"{where} question_id: {name!r:.80} is not an image file name")
        plan.image((category, name_component(stem + suffix, where)), row["image"], where)
        question = " ".join(str(row["question"]).split())
        questions.setdefault((category, f"{stem}.txt"), []).append(f"{question}\t{str(row['answer']).strip()}")
    for parts, lines in questions.items():
        plan.text(parts, lines)
    return plan


def _plan_hallusionbench(splits: Mapping[str, Any]) -> _Plan:
    """lmms-lab/HallusionBench (the question file's columns plus image) -> HallusionBench.json + VD/, VS/ (a
    row's `filename` must be a relative image path inside the folder, as the release's `./VS/...` are)."""
    (ds,) = splits.values()
    fields = ("category", "subcategory", "visual_input", "set_id", "figure_id", "sample_note", "question_id",
              "question", "gt_answer_details", "gt_answer", "filename")
    _require(ds, (*fields[:5], "question_id", "question", "gt_answer", "filename", "image"), "HallusionBench")
    plan, rows = _Plan(), []
    for n, row in enumerate(ds):
        record = {f: row.get(f) for f in fields}
        if record["filename"]:
            where = f"HallusionBench row {n} filename"
            parts = relative_parts(record["filename"], where)
            confined(Path("."), "/".join(parts), where, IMAGE_SUFFIXES)  # an image file type, checked up front
            plan.image(parts, row["image"], where)
        rows.append(record)
    plan.files[("HallusionBench.json",)] = json.dumps(rows, indent=1).encode("utf-8")
    return plan


_PLANNERS: Mapping[str, Callable[[Mapping[str, Any]], _Plan]] = {
    "pope": _plan_pope, "mme": _plan_mme, "hallusionbench": _plan_hallusionbench}
_LAYOUT: Mapping[str, Callable[[Path], tuple[Path, Path]]] = {
    "pope": lambda root: (root, root / "images"), "mme": lambda root: (root, root),
    "hallusionbench": lambda root: (root, root)}
