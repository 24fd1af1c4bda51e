"""A run's identity: one canonical record of everything that can change an answer or a score.

`--resume`, every shard, the output cache and `halluc report`'s "same run" test all compare this record
(or, for the cache, its part that decides one output), so a mismatch is found the same way everywhere
and refused in one line that names the differing fields.

The record (JSON, in config.json under "identity"):
    model           the name as given (a local directory: its folder name; its contents are `weights`)
    weights         what was loaded: the hub commit, a content hash of a local directory's files
                    ("sha256:..."), or an offline model's recipe ("random-init seed=0")
    dtype           the dtype the weights are loaded in ("float32", "bfloat16"; `auto` resolved)
    methods         every compared configuration: its label and all parameters after canonicalisation
    benchmark, task_version, protocol, task_settings (e.g. AMBER's extractor)
    decoding        the protocol's decoding without `max_new_tokens`, which has its own field
    max_new_tokens
    question_set    which published question set the files are (POPE: "coco" = 3,000 per split,
                    "coco_2910"), or None for other files
    data_source     local files, or the HF dataset, revision and config they came from
    files           {file name: sha256} of every question and label file the task reads
    prompts         {split: sha256 of every (id, prompt, image name)} over the samples the run covers:
                    the prompt template applied to each question
    images          {split: sha256 of the image files' contents} over the same samples
    splits, limit   what the run covers
    seed            the run's seed (sampling draws one seed per sample from it)

Coverage policy: a resumed run may grow (more splits, a larger or no `--limit`); nothing it already
covers is dropped, so a narrower `--split` or `--limit` on `--resume` is refused. Every other field
must be equal. Batch size, device and progress are not part of the identity: greedy batches equal
single samples (tested), and the run records them as provenance.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from halluc.benchmarks.spec import companion_tasks
from halluc.errors import HallucError

FIELDS = ("model", "weights", "dtype", "methods", "benchmark", "task_version", "protocol", "task_settings",
          "decoding", "max_new_tokens", "question_set", "data_source", "files", "prompts", "images", "splits",
          "limit", "seed")
COVERAGE = ("splits", "limit")        # may grow on --resume
PER_SPLIT = ("prompts", "images")     # digests over the covered samples: recomputed at the stored coverage
# what decides one generated output (the cache key adds the prompt, the image and the sample's seed)
GENERATION = ("model", "weights", "dtype", "decoding", "max_new_tokens")
_DESCRIBED = ("benchmark", "task_version", "protocol", "decoding", "data_source", "labels")


def as_json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=str))


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(as_json(value), sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- fingerprints of files

_FILE_HASHES: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """The content hash of a file, remembered per (path, size, mtime) within the process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _FILE_HASHES:
        sha = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
        _FILE_HASHES[key] = sha.hexdigest()
    return _FILE_HASHES[key]


def directory_fingerprint(folder: Path) -> str:
    """A local model directory's identity: the content hash of every file in it (weights, config,
    tokenizer, processor, chat template), hidden files left out. Reads every byte once per process:
    about 10 s for 14 GB of weights."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return "sha256:" + digest({str(p.relative_to(folder)): file_sha256(p) for p in files})


def model_label(model: str) -> str:
    """How the identity names a model: a local directory by its folder name (its contents are the
    weights fingerprint, so the same directory moved or spelled another way is the same model)."""
    return Path(model).resolve().name if Path(model).is_dir() else model


def weights_before_load(model: str, seed: int) -> str | None:
    """What `load(model, seed=seed)` will load, known without loading: an offline model's recipe, a local
    directory's content hash; None for a hub model (its commit is known once loaded)."""
    from halluc.modeling.registry import offline_models

    offline = offline_models().get(model)
    if offline is not None:
        return offline.revision(seed)
    if Path(model).is_dir():
        return directory_fingerprint(Path(model))
    return None


def question_set_note(task) -> str | None:
    """One line when a protocol defined on one published question set runs on another (`--protocol llava`,
    defined on POPE's 2,910-question files, on the 3,000-question files of `--source hf`)."""
    defined = getattr(getattr(task, "preset", None), "question_set", None)
    found = task.question_set()
    if defined is None or found is None or found == defined:
        return None
    return (f"{task.name} protocol '{task.protocol.name}' is defined on the {QUESTION_SETS.get(defined, defined)}; "
            f"this run asks the {QUESTION_SETS.get(found, found)}, so its numbers are not the protocol's published "
            f"setting: every result row records question_set '{found}'")


QUESTION_SETS = {"coco": "3,000-question POPE files (RUCAIBox/POPE, lmms-lab/POPE)",
                 "coco_2910": "2,910-question POPE files (POPE e3e3926, as LLaVA and OPERA ran it)"}


# ---------------------------------------------------------------- the record

def task_files(task) -> dict[str, str]:
    """{file name: sha256} of every question and label file of the task and its companions (RePOPE)."""
    files = {}
    for each in [task, *companion_tasks(task)]:
        files.update({name: file_sha256(path) for name, path in each.data_files().items()})
    return files


def coverage_digests(task, splits: Sequence[str], limit: int | None) -> dict[str, dict[str, str]]:
    """{"prompts": {split: sha256}, "images": {split: sha256}} over the first `limit` samples of each split."""
    prompts, images = {}, {}
    for split in splits:
        samples = task.samples(split)[:limit]
        prompts[split] = digest([[s.id, s.prompt, Path(s.image).name] for s in samples])
        images[split] = digest([file_sha256(s.image) if Path(s.image).is_file() else None for s in samples])
    return {"prompts": prompts, "images": images}


def run_identity(*, model: str, weights: str | None, dtype: str | None, methods: list[dict], task, limit: int | None,
                 seed: int) -> dict:
    """The canonical record of a run (see the module docstring)."""
    described = as_json(task.describe())
    decoding = dict(described["decoding"])
    max_new_tokens = decoding.pop("max_new_tokens", None)
    splits = list(task.splits())
    return as_json({
        "model": model_label(model), "weights": weights, "dtype": dtype, "methods": methods,
        "benchmark": task.name, "task_version": task.version, "protocol": task.protocol.name,
        "task_settings": {k: v for k, v in described.items() if k not in _DESCRIBED},
        "decoding": decoding, "max_new_tokens": max_new_tokens, "question_set": task.question_set(),
        "data_source": described.get("data_source") or {"source": "local"}, "files": task_files(task),
        **coverage_digests(task, splits, limit), "splits": splits, "limit": limit, "seed": seed})


def generation_key(identity: Mapping, params: Mapping) -> dict:
    """The part of a run's identity that decides one configuration's outputs (for the output cache)."""
    return {**{k: identity.get(k) for k in GENERATION}, "methods": as_json(params)}


# ---------------------------------------------------------------- comparing records

def differences(first: Mapping, second: Mapping, fields: Sequence[str] = FIELDS) -> list[str]:
    """The fields in which two records differ."""
    return [k for k in fields if as_json(first.get(k)) != as_json(second.get(k))]


def describe_differences(first: Mapping, second: Mapping, fields: Sequence[str]) -> str:
    """`max_new_tokens (3 vs 5), files (coco_pope_random.json)`: each field with what differs in it."""
    return ", ".join(f"{name} ({_what_differs(first.get(name), second.get(name))})" for name in fields)


def _what_differs(a: Any, b: Any) -> str:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        keys = [k for k in dict.fromkeys([*a, *b]) if as_json(a.get(k)) != as_json(b.get(k))]
        return ", ".join(map(str, keys[:3])) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    if isinstance(a, list) and isinstance(b, list) and all(isinstance(x, dict) and "label" in x for x in a + b):
        labels_a, labels_b = [x["label"] for x in a], [x["label"] for x in b]
        if labels_a == labels_b:  # the same configurations with other parameters
            changed = [x["label"] for x, y in zip(a, b) if as_json(x) != as_json(y)]
            return f"parameters of {', '.join(changed)}"
        return f"{_short(labels_a)} vs {_short(labels_b)}"
    return f"{_short(a)} vs {_short(b)}"


def _short(value: Any) -> str:
    text = json.dumps(as_json(value))
    return text if len(text) <= 60 else text[:57] + "..."


def resume_conflicts(stored: Mapping, current: Mapping,
                     reread: Callable[[Sequence[str], int | None], Mapping[str, Mapping]]) -> list[str]:
    """Fields that forbid continuing `stored` as `current` (coverage may grow, see the module docstring).

    `reread(splits, limit)` gives the per-split digests of the data as it reads now, at the stored coverage."""
    fixed = [k for k in FIELDS if k not in (*COVERAGE, *PER_SPLIT, "files")]
    conflicts = differences(stored, current, fixed)
    old_files, new_files = stored.get("files") or {}, current.get("files") or {}
    if any(new_files.get(name) != sha for name, sha in old_files.items()):
        conflicts.append("files")
    if not set(stored.get("splits") or []) <= set(current.get("splits") or []):
        conflicts.append("splits")
    old_limit, new_limit = stored.get("limit"), current.get("limit")
    if new_limit is not None and (old_limit is None or new_limit < old_limit):
        conflicts.append("limit")
    if "splits" not in conflicts:
        now = reread(stored.get("splits") or [], old_limit)
        conflicts += [k for k in PER_SPLIT if as_json(now.get(k)) != as_json(stored.get(k))]
    return conflicts


def refuse_resume(out: Path, stored: Mapping, current: Mapping, conflicts: Sequence[str]) -> HallucError:
    coverage = [k for k in conflicts if k in COVERAGE]
    hint = (" (a resumed run may add splits or raise --limit, never drop what it covers)" if coverage else "")
    return HallucError(f"cannot resume {out}: {describe_differences(stored, current, conflicts)} differ from "
                       f"the original run{hint}; use the original options, or --out DIR for a new run")


# ---------------------------------------------------------------- reading a record back

def read_record(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def stored_identity(config: Mapping) -> dict | None:
    identity = config.get("identity") if isinstance(config, Mapping) else None
    return identity if isinstance(identity, dict) else None

