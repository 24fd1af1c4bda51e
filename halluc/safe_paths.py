"""Paths that come from data stay inside their root.

A dataset field, a question file, a results.json or a method name may name a file, but it never chooses
where halluc reads or writes outside the folder it belongs to. Every such name goes through here:

- `name_component` — one plain file or folder name: no separator, no `..`, no control character.
- `confined` — a relative path made of such components, joined to a root, and checked again after
  resolving symbolic links, so a link inside the root cannot lead out of it either.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from halluc.errors import HallucError

MAX_NAME = 255  # the longest file name common file systems accept
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def name_component(name: object, what: str) -> str:
    """`name` as one plain path component, or one line saying why it is not one."""
    if not isinstance(name, str):
        raise HallucError(f"{what}: expected a file name, got {type(name).__name__} {name!r:.60}")
    if name in ("", ".", ".."):
        raise HallucError(f"{what}: {name!r} is not a file name")
    if "/" in name or "\\" in name or _CONTROL.search(name):
        raise HallucError(f"{what}: {name!r:.80} must be a plain name (no path separator or control character)")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME:
        raise HallucError(f"{what}: a name of {len(name)} characters is too long (at most {MAX_NAME} bytes)")
    return name


def relative_parts(path: object, what: str) -> tuple[str, ...]:
    """A relative path's components (`./VS/chart/0_0.png` -> VS, chart, 0_0.png), each a plain name."""
    if not isinstance(path, str) or not path:
        raise HallucError(f"{what}: expected a relative file path, got {path!r:.60}")
    if _CONTROL.search(path):
        raise HallucError(f"{what}: {path!r:.80} holds a control character")
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute() or PureWindowsPath(path).drive:
        raise HallucError(f"{what}: {path!r:.80} is an absolute path; only paths inside the data folder are allowed")
    if "\\" in path:
        raise HallucError(f"{what}: {path!r:.80} uses a backslash; write paths with '/'")
    parts = tuple(p for p in PurePosixPath(path).parts if p != ".")
    if not parts or ".." in parts:
        raise HallucError(f"{what}: {path!r:.80} leaves its folder ('..'); only paths inside it are allowed")
    return tuple(name_component(p, what) for p in parts)


def confined(root: Path, path: object, what: str, suffixes: frozenset[str] | None = None) -> Path:
    """`root / path` for a relative `path` from data, refused when it would leave `root` (also through a
    symbolic link) or, with `suffixes`, when its file type is not one of them."""
    parts = relative_parts(path, what)
    if suffixes is not None and PurePosixPath(parts[-1]).suffix.lower() not in suffixes:
        raise HallucError(f"{what}: {parts[-1]!r:.80} is not an image file ({', '.join(sorted(suffixes))})")
    target = Path(root).joinpath(*parts)
    base = Path(root).resolve()
    if not target.resolve().is_relative_to(base):
        raise HallucError(f"{what}: {path!r:.80} leads outside {root} (through a symbolic link)")
    return target
