"""Kill-safe storage of per-sample outputs, and the output cache shared between runs.

Each finished sample is one JSON line, flushed and fsynced before the next starts, so a run
killed at any point loses at most the sample in flight. A torn last line (killed mid-write, or a
full disk) is cut off when the log is next written; every complete line before it is kept.
A damaged line anywhere else is never skipped silently: reading names the file and the line, and
`repair()` (what `--resume` does) rewrites the log without it, so that sample is generated again.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from halluc.errors import HallucError


class CorruptLog(HallucError):
    """A sample log has a damaged line before its end."""


class SampleLog:
    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> dict[str, dict]:
        """Finished samples by id (the last line wins if an id repeats). A torn last line is ignored;
        a damaged line before it raises `CorruptLog` naming the file and line."""
        rows, damaged = self._parse()
        if damaged:
            raise CorruptLog(f"{self.path}: line {damaged[0]} is damaged ({len(damaged)} bad line(s)); "
                             "`halluc run ... --resume` repairs the log and generates those samples again")
        return rows

    def repair(self) -> list[int]:
        """Rewrite the log without damaged or torn lines (atomically); return the removed line numbers."""
        if not self.path.exists():
            return []
        rows, damaged = self._parse()
        data = self.path.read_bytes()
        if damaged or (data and not data.endswith(b"\n")):
            kept = [line for i, line in enumerate(data.split(b"\n"), 1) if line.strip() and i not in damaged]
            kept = [line for line in kept if _parses(line)]
            tmp = self.path.with_suffix(self.path.suffix + f".tmp{os.getpid()}")
            tmp.write_bytes(b"".join(line + b"\n" for line in kept))
            os.replace(tmp, self.path)
        return damaged

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one finished sample; on a full disk nothing half-written stays behind."""
        self._cut_torn_line()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        with self.path.open("ab") as f:
            size = f.tell()
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            except OSError as err:
                f.truncate(size)  # the sample stays missing, so --resume generates it again
                if err.errno == errno.ENOSPC:
                    raise HallucError(f"no space left on the device while writing {self.path}; free some space "
                                      "and run again with --resume (finished samples are kept)") from None
                raise

    def _parse(self) -> tuple[dict[str, dict], list[int]]:
        """Rows by id and the numbers of damaged lines (a torn last line is not counted)."""
        if not self.path.exists():
            return {}, []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        last = len(lines) if data.endswith(b"\n") else len(lines) - 1  # lines after `last` are torn
        rows, damaged = {}, []
        for number, line in enumerate(lines[:last], 1):
            if not line.strip():
                continue
            row = _parses(line)
            if isinstance(row, dict) and "id" in row:
                rows[row["id"]] = row
            else:
                damaged.append(number)
        return rows, damaged

    def _cut_torn_line(self) -> None:
        """Cut a torn last line so the next append starts on a fresh line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)


def _parses(line: bytes) -> Any:
    try:
        return json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class OutputCache:
    """Outputs keyed by everything that determines them (the run identity's generation part: model, weights
    fingerprint, dtype, methods and parameters, decoding; then prompt, image contents, seed), so repeated
    runs reuse them. The Runner builds the key (`Runner._cache_key`)."""

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
        assert self.root is not None  # only a store with a root reads and writes files
        return self.root / key[:2] / f"{key}.json"

