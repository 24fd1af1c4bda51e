"""Kill-safe storage of per-sample outputs, and the output cache shared between runs.

Each finished sample is one JSON line, flushed and fsynced before the next starts, so a run
killed at any point loses at most the sample in flight. A torn last line (killed mid-write) is
cut off when the log is reopened; every complete line before it is kept.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


class SampleLog:
    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> dict[str, dict]:
        """Finished samples by id (the last line wins if an id repeats)."""
        return {row["id"]: row for row in self._complete_lines()}

    def append(self, row: Mapping[str, Any]) -> None:
        self._repair()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _complete_lines(self) -> Iterator[dict]:
        if not self.path.exists():
            return
        for line in self.path.read_bytes().split(b"\n"):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                return  # only the torn last line can be incomplete

    def _repair(self) -> None:
        """Cut a torn last line so the next append starts on a fresh line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class OutputCache:
    """Outputs keyed by everything that determines them (model, revision, methods and parameters,
    protocol and decoding, prompt, image file, seed), so repeated runs reuse them."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root else None

    @staticmethod
    def key(**parts: Any) -> str:
        blob = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        if self.root is None:
            return None
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def put(self, key: str, row: Mapping[str, Any]) -> None:
        if self.root is not None:
            write_json_atomic(self._path(key), dict(row))

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"


def image_fingerprint(path: Path) -> str:
    """Cheap identity of an image file for cache keys: name, size and modification time."""
    st = Path(path).stat()
    return f"{Path(path).name}:{st.st_size}:{int(st.st_mtime)}"
