"""Reading benchmark files: every failure is a one-line HallucError that names the file (and line)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from halluc.errors import HallucError


def read_text(path: str | Path) -> str:
    """The whole file as UTF-8 text; a missing or unreadable file is a HallucError, not an OSError."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HallucError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HallucError(f"{path}: is a directory, expected a file") from None
    except UnicodeDecodeError as err:
        raise HallucError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise HallucError(f"{path}: cannot read ({err.strerror})") from None


def read_json(path: str | Path) -> Any:
    """One JSON document."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise HallucError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None


def read_jsonl_located(path: str | Path) -> list[tuple[str, dict]]:
    """JSON lines as `("file:line", object)` pairs, so later checks can say where a bad row is.

    Blank lines are skipped. A file holding one JSON array of objects is accepted too
    (some re-distributions of the POPE and CHAIR files are arrays); its rows are located as "file: item N".
    """
    text = read_text(path)
    if text.lstrip().startswith("["):
        rows = read_json(path)
        if not isinstance(rows, list):
            raise HallucError(f"{path}: expected JSON lines or a JSON array")
        return [_as_object(row, f"{path}: item {i}") for i, row in enumerate(rows, 1)]
    located = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise HallucError(f"{where}: not valid JSON ({err.msg})") from None
        located.append(_as_object(row, where))
    return located


def read_jsonl(path: str | Path) -> list[dict]:
    """JSON lines (see `read_jsonl_located`), without the locations."""
    return [row for _, row in read_jsonl_located(path)]


def require(row: dict, keys: tuple[str, ...], where: str) -> None:
    """Raise naming the location when `row` lacks one of `keys`."""
    missing = [k for k in keys if k not in row]
    if missing:
        raise HallucError(f"{where}: missing key '{missing[0]}' (need {', '.join(keys)})")


def _as_object(row: Any, where: str) -> tuple[str, dict]:
    if not isinstance(row, dict):
        raise HallucError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return where, row


def load_coco(path: str | Path):
    """A pycocotools COCO object for an annotation file, without its progress prints."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise HallucError(f"{path}: not a COCO annotation file (no 'annotations' list)")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
