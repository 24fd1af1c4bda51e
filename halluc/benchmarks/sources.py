"""Benchmarks from their maintained HF datasets (`--source hf`), as an alternative to local files.

A dataset is read once with `datasets` (`load_dataset(id, config, revision=..., split=...)` for the
hub, `load_from_disk` for a saved copy) and written out in the benchmark's own local layout under
the data home: question files in the official format, and every image with the bytes the dataset
stores. The ordinary task then runs on those files, so both sources give identical samples (same
ids, prompts, targets and image files), and the Runner fingerprints the images as usual. A folder is
written once (a `complete` marker last) and reused offline afterwards.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from halluc.benchmarks.paths import data_home
from halluc.errors import HallucError


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
        if root.exists():
            shutil.rmtree(root)   # a killed earlier write: redo it whole
        _WRITERS[benchmark](splits, root)
        (root / "provenance.json").write_text(json.dumps(provenance, indent=1), encoding="utf-8")
        (root / "complete").touch()
    data, images = _LAYOUT[benchmark](root)
    return Materialized(data, images, provenance)


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


def _write_image(image: Any, path: Path) -> None:
    """An image cell (bytes or path, undecoded) written as it is stored."""
    if not isinstance(image, Mapping) or not (image.get("bytes") or image.get("path")):
        raise HallucError(f"no image data for {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.get("bytes"):
        path.write_bytes(image["bytes"])
    else:
        shutil.copyfile(image["path"], path)


def _suffix(image: Mapping, default: str = ".png") -> str:
    """The stored image's format as a file suffix (dataset rows do not always name their files)."""
    from PIL import Image

    data = image.get("bytes")
    if not data:
        return Path(image.get("path") or "").suffix or default
    with Image.open(io.BytesIO(data)) as img:
        return {"JPEG": ".jpg", "PNG": ".png"}.get(img.format or "", default)


# ---------------------------------------------------------------- per benchmark: HF schema -> local layout

def _write_pope(splits: Mapping[str, Any], root: Path) -> None:
    """lmms-lab/POPE (question_id, question, answer, image_source, image, category) -> coco_pope_{split}.json."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, ds in splits.items():
        _require(ds, ("question_id", "question", "answer", "image_source", "image"), f"POPE {split}")
        lines = []
        for row in ds:
            image = f"{row['image_source']}.jpg"
            if not (root / "images" / image).exists():
                _write_image(row["image"], root / "images" / image)
            lines.append(json.dumps({"question_id": row["question_id"], "image": image, "text": row["question"],
                                     "label": str(row["answer"]).strip().lower()}))
        (root / f"coco_pope_{split}.json").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_mme(splits: Mapping[str, Any], root: Path) -> None:
    """lmms-lab/MME (question_id = subtask/image file, image, question, answer, category) -> the release
    layout: <subtask>/<image> beside <subtask>/<stem>.txt with `question<TAB>answer` lines."""
    (ds,) = splits.values()
    _require(ds, ("question_id", "question", "answer", "category", "image"), "MME")
    questions: dict[Path, list[str]] = {}
    for row in ds:
        name = Path(str(row["question_id"])).name
        folder = root / str(row["category"])
        stem = Path(name).stem
        image = folder / (stem + (Path(name).suffix or _suffix(row["image"])))
        if not image.exists():
            _write_image(row["image"], image)
        question = " ".join(str(row["question"]).split())
        questions.setdefault(folder / f"{stem}.txt", []).append(f"{question}\t{str(row['answer']).strip()}")
    for path, lines in questions.items():
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_hallusionbench(splits: Mapping[str, Any], root: Path) -> None:
    """lmms-lab/HallusionBench (the question file's columns plus image) -> HallusionBench.json + VD/, VS/."""
    (ds,) = splits.values()
    fields = ("category", "subcategory", "visual_input", "set_id", "figure_id", "sample_note", "question_id",
              "question", "gt_answer_details", "gt_answer", "filename")
    _require(ds, (*fields[:5], "question_id", "question", "gt_answer", "filename", "image"), "HallusionBench")
    rows = []
    for row in ds:
        record = {f: row.get(f) for f in fields}
        if record["filename"]:
            target = root / str(record["filename"]).removeprefix("./")
            if not target.exists():
                _write_image(row["image"], target)
        rows.append(record)
    root.mkdir(parents=True, exist_ok=True)
    (root / "HallusionBench.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


_WRITERS: Mapping[str, Callable[[Mapping[str, Any], Path], None]] = {
    "pope": _write_pope, "mme": _write_mme, "hallusionbench": _write_hallusionbench}
_LAYOUT: Mapping[str, Callable[[Path], tuple[Path, Path]]] = {
    "pope": lambda root: (root, root / "images"), "mme": lambda root: (root, root),
    "hallusionbench": lambda root: (root, root)}
