"""Reading benchmark files: every failure is a one-line HallucError that names the file (and line)."""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
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


_ASCII_DIGITS = re.compile(r"[0-9]{1,18}")  # up to 18 digits: an id, never a number that overflows


def integer_id(value: Any, where: str, key: str = "id") -> int:
    """An id given as an integer or a string of ASCII digits ("12" and 12 meet). Refused with the place: a
    bool (`true` is not 1), a float (1.7, and 1.0 too: an id is never a measurement), Infinity or NaN, digits of
    other scripts ("²", "٣": `str.isdigit` accepts them, `int` does not or reads another number), and ids
    beyond 18 digits."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
        return value
    if isinstance(value, str) and _ASCII_DIGITS.fullmatch(value.strip()):
        return int(value.strip())
    raise HallucError(f"{where}: '{key}' must be an integer or a string of digits 0-9, got {json.dumps(value)}")


def text_field(row: Mapping, key: str, where: str) -> str:
    """A field that must be a JSON string (an image name, a question, a label)."""
    value = row[key]
    if not isinstance(value, str):
        raise HallucError(f"{where}: '{key}' must be a string, got {json.dumps(value)}")
    return value


def require(row: Mapping, keys: tuple[str, ...], where: str) -> None:
    """Raise naming the location when `row` lacks one of `keys`."""
    missing = [k for k in keys if k not in row]
    if missing:
        raise HallucError(f"{where}: missing key '{missing[0]}' (need {', '.join(keys)})")


def _as_object(row: Any, where: str) -> tuple[str, dict]:
    if not isinstance(row, dict):
        raise HallucError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return where, row


# the fields each COCO list must carry, and which are ids (integers)
_COCO_FIELDS = {"images": (("id",), ()), "categories": (("id", "name"), ("name",)),
                "annotations": (("id", "image_id"), ())}


def _check_coco(data: dict, path) -> None:
    """Every row of a COCO file's lists is an object with integer ids (and string names), so that indexing
    it cannot fail half-way: one line naming the file, list and item otherwise."""
    for key, (needed, texts) in _COCO_FIELDS.items():
        rows = data.get(key, [])
        if not isinstance(rows, list):
            raise HallucError(f"{path}: '{key}' must be a list, got {type(rows).__name__}")
        for i, row in enumerate(rows):
            where = f"{path}: {key}[{i}]"
            if not isinstance(row, dict):
                raise HallucError(f"{where}: expected an object, got {type(row).__name__}")
            require(row, needed, where)
            for field in needed:
                if field in texts:
                    text_field(row, field, where)
                else:
                    _coco_int(row, field, where)
            if key == "annotations" and "categories" in data:
                require(row, ("category_id",), where)
                _coco_int(row, "category_id", where)
            if key == "annotations" and "caption" in row:
                text_field(row, "caption", where)
    known = {c["id"] for c in data.get("categories", [])}
    stray = next((a for a in data["annotations"] if "categories" in data and a["category_id"] not in known), None)
    if stray is not None:
        raise HallucError(f"{path}: annotation {stray['id']} has category_id {stray['category_id']}, which no "
                          "category has")


def _coco_int(row: dict, key: str, where: str) -> None:
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise HallucError(f"{where}: '{key}' must be an integer (COCO ids are numbers), got {json.dumps(value)}")


def load_coco(path: str | Path):
    """A pycocotools COCO object for an annotation file, without its progress prints."""
    import contextlib
    import io

    from pycocotools.coco import COCO

    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise HallucError(f"{path}: not a COCO annotation file (no 'annotations' list)")
    _check_coco(data, path)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
