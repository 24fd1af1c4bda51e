"""`halluc data fetch`: official benchmark files from pinned sources, verified by checksum.

Each benchmark's spec lists its files (`BenchmarkSpec.data.remotes`, in the benchmark's `data` module);
this module downloads, verifies and unpacks them the same way for all.

Only question lists and annotations are fetched; images (COCO val2014, MME, AMBER, HallusionBench) are large
and licensed separately, so the command says where to get them and how to pass them (`--images DIR`).
Offline, it prints exactly which files to put where.
"""
from __future__ import annotations

import hashlib
import shutil
import urllib.request
import zipfile
from pathlib import Path

from halluc.benchmarks.paths import data_home
from halluc.benchmarks.spec import BENCHMARKS, BenchmarkData, Remote
from halluc.errors import HallucError, unknown_choice
from halluc.safe_paths import confined


def fetchable() -> dict[str, BenchmarkData]:
    """Every benchmark with files to fetch, and its data description."""
    return {name: spec.data for name, spec in BENCHMARKS.items().items() if spec.data.remotes}


def fetch(benchmark: str, home: Path | None = None, opener=urllib.request.urlopen) -> list[Path]:
    """Download, verify and unpack one benchmark's files into the data home; return what was written."""
    if benchmark not in fetchable():
        raise unknown_choice("benchmark", benchmark, fetchable())
    home = Path(home or data_home())
    written = []
    for remote in fetchable()[benchmark].remotes:
        path = home / remote.target
        if not (path.exists() and _verified(path, remote.sha256)):
            _download(remote, path, opener)
        written.append(path)
        if path.suffix == ".zip":
            written += _unpack(path)
    return written


def _download(remote: Remote, path: Path, opener) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    try:
        with opener(remote.url, timeout=60) as response, tmp.open("wb") as f:
            shutil.copyfileobj(response, f)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise HallucError(f"cannot download {remote.url} ({err.__class__.__name__}). Offline? Put that file at {path} "
                          f"yourself{_sha_hint(remote)}, or pass --data DIR to `halluc run`") from None
    if not _verified(tmp, remote.sha256):
        tmp.unlink()
        raise HallucError(f"checksum mismatch for {remote.url}: expected sha256 {remote.sha256}")
    tmp.replace(path)


def _sha_hint(remote: Remote) -> str:
    return f" (sha256 {remote.sha256})" if remote.sha256 else ""


def _verified(path: Path, sha256: str | None) -> bool:
    if sha256 is None:
        return path.stat().st_size > 0
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest == sha256


def _unpack(archive: Path) -> list[Path]:
    """COCO annotations -> chair/annotations/; MME eval tool -> mme/eval_tool/."""
    target = archive.parent / ("annotations" if "annotations" in archive.name else archive.stem)
    if target.exists():
        return [target]
    try:
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.namelist() if "instances_val2014" in m or "captions_val2014" in m
                       or "annotations" not in archive.name]
            for member in members:  # an archive (some are not checksummed) never writes outside its folder
                confined(archive.parent, member.rstrip("/"), f"{archive.name} member")
            z.extractall(archive.parent, members)
    except zipfile.BadZipFile:
        raise HallucError(f"{archive} is not a valid zip file; delete it and fetch again") from None
    return [target]
