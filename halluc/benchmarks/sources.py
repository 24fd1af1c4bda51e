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

Each benchmark's `BenchmarkSpec.data.hf` names its dataset, pinned revision and splits, and plans its
layout (in the benchmark's `data` module); this module is the same for all. Override the revision with
`--data ID@REVISION`, or pass `--data DIR` for a dataset saved with `save_to_disk`; the dataset id and
revision go into config.json.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halluc.benchmarks.paths import data_home
from halluc.benchmarks.spec import BENCHMARKS, HFSource, benchmark_names, benchmark_spec
from halluc.errors import HallucError
from halluc.safe_paths import confined


@dataclass(frozen=True)
class Materialized:
    data: Path       # what the task's --data expects
    images: Path     # what the task's --images expects
    provenance: dict


def hf_benchmarks() -> list[str]:
    """The benchmarks with an HF dataset source."""
    return [name for name, spec in BENCHMARKS.items().items() if spec.data.hf is not None]


def has_source(benchmark: str) -> bool:
    return benchmark in benchmark_names() and benchmark_spec(benchmark).data.hf is not None


def materialize(benchmark: str, where: str | Path | None = None, home: Path | None = None) -> Materialized:
    """The benchmark's files from an HF dataset: the pinned hub revision, `ID[@REVISION]`, or a saved folder."""
    pinned = benchmark_spec(benchmark).data.hf
    if pinned is None:
        raise HallucError(f"{benchmark} has no HF dataset source; choices: {', '.join(hf_benchmarks())} "
                          "(pass --images DIR)")
    local = where is not None and Path(where).exists()
    if where is not None and local:
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
        plan = pinned.plan(splits)  # every row checked before anything is written
        _write_whole(plan, provenance, root)
    data, images = pinned.layout(root)
    return Materialized(data, images, provenance)


def _write_whole(plan: Plan, provenance: dict, root: Path) -> None:
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


def require_columns(ds, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise HallucError(f"{what}: the dataset has no column '{missing[0]}' (columns: {', '.join(ds.column_names)})")


def image_bytes(image: Any, what: str) -> bytes:
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


def image_suffix(data: bytes, default: str = ".png") -> str:
    """The stored image's format as a file suffix (dataset rows do not always name their files)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return {"JPEG": ".jpg", "PNG": ".png"}.get(img.format or "", default)
    except (UnidentifiedImageError, OSError):
        return default


@dataclass
class Plan:
    """What a writer will create under the benchmark's root, checked in full before anything is written:
    relative path -> file bytes (image bytes, or a question file's text)."""

    files: dict[tuple[str, ...], bytes] = field(default_factory=dict)

    def image(self, parts: tuple[str, ...], cell: Any, what: str) -> None:
        if parts not in self.files:  # an image shared by several questions is written once
            self.files[parts] = image_bytes(cell, what)

    def text(self, parts: tuple[str, ...], lines: list[str]) -> None:
        self.files[parts] = ("\n".join(lines) + "\n").encode("utf-8")

    def write(self, root: Path) -> None:
        for parts, data in self.files.items():
            path = confined(root, "/".join(parts), "output file")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)



