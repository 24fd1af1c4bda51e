"""`halluc data fetch`: official benchmark files from pinned sources, verified by checksum.

Only question lists and annotations are fetched; images (COCO val2014, MME, AMBER, HallusionBench) are large
and licensed separately, so the command says where to get them and how to pass them (`--images DIR`).
Offline, it prints exactly which files to put where.
"""
from __future__ import annotations

import hashlib
import shutil
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from halluc.benchmarks.paths import data_home
from halluc.errors import HallucError, unknown_choice
from halluc.safe_paths import confined


@dataclass(frozen=True)
class Remote:
    url: str
    target: str  # path under the data home
    sha256: str | None  # None: verified by content checks after download (see notes)


_POPE = "https://raw.githubusercontent.com/{repo}/{ref}/{path}/coco_pope_{split}.json"
_POPE_SHA = {
    "coco": {"random": "ac25245170b975a5bdf9080b23fd431dfe6be458bc038259c1f4f09a6bef7994",
             "popular": "72c1a8ad45d0c13514f5f22598261df41d3b533854d29682e924db50ed8aa753",
             "adversarial": "420b3407db1fa9f1187a805dca41cb7b97fd91504e6c2179706188c107fb8ef8"},
    "coco_2910": {"random": "c16b65d2df6d70bb0814c8a4375833d39cdb09928fd936d3fc546491efa37f35",
                  "popular": "5b16653023bf4f64d57eb0d168259de6627f5cde7538b85ebed3cc33034aa6cc",
                  "adversarial": "1d8f0906a9b50c05640f6f23abfac97523be2a1bed28f7eadc63b811699b2d26"},
}
# 3,000-question files: RUCAIBox/POPE at 3df3ba1; 2,910 (LLaVA/OPERA): the copy in shikiw/OPERA (= POPE e3e3926).
_POPE_SRC = {"coco": ("RUCAIBox/POPE", "3df3ba1", "output/coco"), "coco_2910": ("shikiw/OPERA", "main", "pope_coco")}

# RePOPE relabels the 3,000-question files; YanNeu/RePOPE at bcf22e5.
_REPOPE = "https://raw.githubusercontent.com/YanNeu/RePOPE/bcf22e5690d587cce34e1728af3efdcfaf747d29/annotations/"
_REPOPE_SHA = {"random": "f464fcaf60b24ce2f280cf33f122e000dbdd35c8e88f77c4141c9c2cba864611",
               "popular": "57832b055bae5fd6176278a4f104c98ddd84811f7d26dfcb93d481f6c9da09a5",
               "adversarial": "8c346dbb060bf422ff92e769fa68e5ab3e8a777cb28a26e973387441e05c9ccf"}

# AMBER ground truth and queries (Apache-2.0): junyangwang0410/AMBER at 534babf.
_AMBER = "https://raw.githubusercontent.com/junyangwang0410/AMBER/534babf6bbfcce2e735c26289dedfb21cef3c939/data/"
_AMBER_SHA = {"annotations.json": "db22a436c4836fbb295e60b4e80d519573077579fb7032f01b193c1bd022b797",
              "relation.json": "c4c1491e9bbc3209abc1888c12a1bf8413bdbab8a0d8be04b990a2e7680cf23e",
              "safe_words.txt": "f92cf1123f4578a2630832fac3e6ac4de36212ea55859d3bed4fd233723f4043",
              "metrics.txt": "2fbe2ee584d10e7ce0a568a4902d3d2296727d45f761bf091dd35c4e4b5bc6ac",
              "query/query_all.json": "127680ae61f7d4a92d2f7f07a8deaec07f0689b194d2c7c0f41ead7bd2c5bcf5"}

SOURCES: dict[str, list[Remote]] = {
    "pope": [Remote(_POPE.format(repo=_POPE_SRC[v][0], ref=_POPE_SRC[v][1], path=_POPE_SRC[v][2], split=s),
                    f"pope/{v}/coco_pope_{s}.json", sha)
             for v, splits in _POPE_SHA.items() for s, sha in splits.items()],
    "chair": [
        Remote("https://raw.githubusercontent.com/xing0047/cca-llava/77379aa458366980d3bd4a0b9e53c3496a9cb9b1/"
               "playground/data/coco_chair.jsonl", "chair/opera_500_image_ids.jsonl",
               "bd203322025f97c8e6d5a82284f98e91d59fbfc156078b0db1fd194b8d7e7268"),
        Remote("http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
               "chair/annotations_trainval2014.zip", None),
    ],
    "repope": [Remote(f"{_REPOPE}coco_repope_{split}.json", f"repope/coco_repope_{split}.json", sha)
               for split, sha in _REPOPE_SHA.items()],
    "amber": [Remote(_AMBER + name, f"amber/{name}", sha) for name, sha in _AMBER_SHA.items()],
    "hallusionbench": [Remote("https://raw.githubusercontent.com/tianyi-lab/HallusionBench/"
                              "744007c232c292942c7f80eb61edb2465482da31/HallusionBench.json",
                              "hallusionbench/HallusionBench.json",
                              "ca6e0fb677dd56e5fb0e2700d06c58d01f8a6ae66e0f1773b2ac48c0a095d051")],
    "mme": [Remote("https://github.com/BradyFU/Awesome-Multimodal-Large-Language-Models/raw/Evaluation/tools/eval_tool.zip",
                   "mme/eval_tool.zip", None)],
}
IMAGES = {
    "pope": "COCO val2014 images: http://images.cocodataset.org/zips/val2014.zip (unzip; pass --images .../val2014)",
    "chair": "COCO val2014 images: http://images.cocodataset.org/zips/val2014.zip (unzip; pass --images .../val2014)",
    "repope": "COCO val2014 images, as for POPE: http://images.cocodataset.org/zips/val2014.zip",
    "amber": "AMBER images: the Google Drive link in the junyangwang0410/AMBER README (unzip; pass --images DIR "
             "holding AMBER_1.jpg ... AMBER_1004.jpg), or --source hf",
    "hallusionbench": "HallusionBench figures: hallusion_bench.zip linked from the tianyi-lab/HallusionBench README "
                      "(unzip; pass --images .../hallusion_bench, the folder holding VD/ and VS/), or --source hf",
    "mme": "MME images: request form in BradyFU/Awesome-Multimodal-Large-Language-Models (branch Evaluation) or "
           "the HF mirror lmms-lab/MME; pass --images .../MME_Benchmark_release_version",
}


def fetch(benchmark: str, home: Path | None = None, opener=urllib.request.urlopen) -> list[Path]:
    """Download, verify and unpack one benchmark's files into the data home; return what was written."""
    if benchmark not in SOURCES:
        raise unknown_choice("benchmark", benchmark, SOURCES)
    home = Path(home or data_home())
    written = []
    for remote in SOURCES[benchmark]:
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
