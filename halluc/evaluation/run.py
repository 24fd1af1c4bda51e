"""`halluc run`: model x methods x benchmark, resumable, cached, shardable, with provenance.

Layout of a run directory:
    config.json                       what was asked, the run's identity (`halluc.evaluation.identity`), and
                                      provenance (versions, commit, device, seeds)
    samples/<entry>/<split>.jsonl      one line per finished sample (per shard: <split>.shard-i-of-n.jsonl)
    results.json                      one row per model x method x benchmark x split, `halluc score` keys
    .lock-<shard>                     held by the process working on that shard (a second one is refused)
    shards/<i>-of-<n>.json            each shard's identity (shard 0 merges only shards of the same run), and
    shards/<i>-of-<n>.failed|refused  a shard that stopped, with the reason (shard 0 stops waiting for it)
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from halluc.benchmarks.spec import benchmark_spec, companion_tasks
from halluc.benchmarks.task import Sample, Task, check_images
from halluc.engine.decoding import Decoding
from halluc.errors import HallucError
from halluc.evaluation import identity as ident
from halluc.evaluation.provenance import provenance
from halluc.evaluation.store import OutputCache, SampleLog, write_json_atomic
from halluc.generation.generate import generate
from halluc.interventions import Method, make_methods
from halluc.limits import MAX_BATCH, MAX_NEW_TOKENS, check_number, check_seed
from halluc.modeling.lvlm import LVLM
from halluc.progress import Progress
from halluc.safe_paths import name_component


@dataclass(frozen=True)
class Entry:
    """One compared configuration: a stack of methods with their parameters (`vhr+vcd`)."""

    methods: tuple[Method, ...]

    @property
    def label(self) -> str:
        return "+".join(m.name for m in self.methods)

    @property
    def params(self) -> dict[str, dict]:
        """Every parameter of every method, canonical: `alpha=1` and `alpha=1.0` are one configuration."""
        return {m.name: {f.name: _canonical(f.default, getattr(m, f.name)) for f in fields(m)} for m in self.methods}

    @property
    def key(self) -> str:
        """Directory name: readable label plus a hash of the parameters."""
        digest = hashlib.sha256(json.dumps(self.params, sort_keys=True, default=str).encode()).hexdigest()[:8]
        return f"{re.sub(r'[^A-Za-z0-9_.+-]', '_', self.label)}-{digest}"


def _canonical(default: Any, value: Any) -> Any:
    """A parameter value as its declared type: an integral number for an int default, a float for a float one."""
    if isinstance(value, bool) or isinstance(default, bool) or not isinstance(value, (int, float)):
        return list(value) if isinstance(value, tuple) else value
    if isinstance(default, float):
        return float(value)
    return int(value) if isinstance(default, int) and float(value).is_integer() else value


ALL_METHODS = "all"  # `--method all`: every registered method, each as one configuration


def expand_all(methods: Sequence[str]) -> list[str]:
    """`all` replaced by every registered method except `none` and the controls (aliases, which are stacks,
    left out), in registry order; a method also named on its own is kept once (without `all`, a repeat
    stays, to be refused)."""
    from halluc.interventions import method_class, method_names

    if ALL_METHODS not in methods:
        return list(methods)
    every = [n for n in method_names() if n != "none" and method_class(n).category != "control"]
    return list(dict.fromkeys(n for m in methods for n in (every if m == ALL_METHODS else [m])))


def parse_entries(methods: Sequence[str], params: Mapping[str, Any], baseline: bool = True) -> list[Entry]:
    """`["vcd", "vhr+vcd"]` -> entries (`all` = every registered method); parameters go to every entry
    that has them; vanilla first."""
    from halluc.interventions.registry import expand_aliases

    spelled = expand_all(methods) or ["none"]
    repeated = sorted({m for m in spelled if spelled.count(m) > 1})
    if repeated:
        raise HallucError(f"method '{repeated[0]}' is listed twice; each --method is one compared configuration")
    used: set[str] = set()
    entries: dict[str, tuple[str, Entry]] = {}  # key -> (how it was spelled, entry)
    for spelling in spelled:
        stack = tuple(expand_aliases(spelling.split("+")))
        mine = {k: v for k, v in params.items() if _belongs(k, stack)}
        used |= set(mine)
        entry = Entry(tuple(make_methods(list(stack), mine)))
        if entry.key in entries:  # `vcd+none`, `ritual-vcd` and `ritual+vcd`: one configuration, two spellings
            first = entries[entry.key][0]
            raise HallucError(f"--method {first} and --method {spelling} are the same configuration ({entry.label} "
                              "with the same parameters); list it once")
        entries[entry.key] = (spelling, entry)
    unused = sorted(set(params) - used)
    if unused:
        raise HallucError(f"parameter '{unused[0]}' belongs to none of the methods {', '.join(methods)}")
    found = [entry for _, entry in entries.values()]
    if baseline and not any(e.label == "none" for e in found):
        found.insert(0, Entry(tuple(make_methods(["none"]))))
    return found


def _belongs(key: str, stack: Sequence[str]) -> bool:
    from halluc.interventions import method_class

    owner, _, name = key.rpartition(".")
    if owner:
        return owner in stack
    return any(name in {f for f in method_class(m).__dataclass_fields__} for m in stack if m != "none")


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def from_env(cls) -> Shard:
        """torchrun / `accelerate launch` set RANK and WORLD_SIZE."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))

    def mine(self, samples: Sequence[Sample]) -> list[Sample]:
        return list(samples[self.index::self.count])

    def suffix(self) -> str:
        return "" if self.count == 1 else f".shard-{self.index}-of-{self.count}"


@dataclass
class RunSpec:
    """Everything that defines a run's outputs (recorded in config.json, its identity under "identity").

    weights: what was loaded (`identity.weights_before_load`; a hub commit is filled in once loaded)
    dtype:   the dtype the weights are loaded in ("float32", `load_dtype`)
    """

    model: str
    entries: list[Entry]
    task: Task
    limit: int | None = None
    seed: int = 0
    batch_size: int = 1
    weights: str | None = None
    dtype: str | None = None
    _identity: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def describe(self) -> dict:
        return {"model": self.model, "methods": [{"label": e.label, "key": e.key, "params": e.params}
                                                 for e in self.entries],
                **self.task.describe(), "limit": self.limit, "seed": self.seed, "batch_size": self.batch_size,
                "identity": self.identity()}

    def identity(self) -> dict:
        """The run's canonical identity record (computed once per weights and dtype)."""
        settings = (self.weights, self.dtype, self.limit, self.seed)
        if self._identity is None or self._identity[0] != settings:
            record = ident.run_identity(model=self.model, weights=self.weights, dtype=self.dtype,
                                        methods=[{"label": e.label, "params": e.params} for e in self.entries],
                                        task=self.task, limit=self.limit, seed=self.seed)
            self._identity = (settings, record)
        return self._identity[1]

    def reread(self, splits: Sequence[str], limit: int | None) -> dict:
        """The per-split digests of the data as it reads now, at another coverage (see `identity`)."""
        return ident.coverage_digests(self.task, [s for s in splits if s in self.task.splits()], limit)

    def loaded(self, lvlm: LVLM) -> bool:
        """Fill in what only the loaded model tells (a hub commit; the dtype when none was asked for);
        True when it changed. The dtype asked for is kept: some models hold a few weights in float32."""
        weights = self.weights or lvlm.revision or f"{self.model} (revision unrecorded)"
        dtype = self.dtype or str(lvlm.model.dtype).removeprefix("torch.")
        changed = (weights, dtype) != (self.weights, self.dtype)
        self.weights, self.dtype = weights, dtype
        return changed


WARM_UP_TOKENS = 2  # a configuration's untimed warm-up batch: its prefill and one decode step


@dataclass
class Runner:
    spec: RunSpec
    lvlm: LVLM | None  # None until the caller has loaded it (api.run checks every run first)
    out: Path
    cache: OutputCache = field(default_factory=lambda: OutputCache(None))
    shard: Shard = field(default_factory=Shard)
    progress: Progress | None = None  # the job's progress (shared by the runs of one command)
    repair: bool = False  # rewrite damaged sample logs without their bad lines (--resume)
    shard_timeout: float = 1800.0  # shard 0 gives up after this long without a new sample from the others
    generated: int = field(default=0, init=False)  # samples this process generated
    started: float = field(default_factory=time.time, init=False)  # shard records older than this are stale
    warmed: set[str] = field(default_factory=set, init=False)  # entries whose untimed warm-up batch ran

    @property
    def loaded_lvlm(self) -> LVLM:
        """The loaded LVLM (generation needs it)."""
        if self.lvlm is None:
            raise RuntimeError("Runner.lvlm must be set before generation")
        return self.lvlm

    def samples(self) -> dict[str, list[Sample]]:
        """Every split's samples (after --limit); images are checked before any generation."""
        samples = {split: self.spec.task.samples(split)[: self.spec.limit] for split in self.spec.task.splits()}
        for split_samples in samples.values():
            check_images(split_samples, Path(split_samples[0].image).parent if split_samples else self.out)
        return samples

    def pending(self, samples: Mapping[str, list[Sample]]) -> tuple[int, int]:
        """(generations this shard will make in all, those already on disk) over every entry and split."""
        total = done = 0
        for entry in self.spec.entries:
            for split, split_samples in samples.items():
                mine = self.shard.mine(split_samples)
                total += len(mine)
                logged = self._log(entry, split)
                rows, _ = logged._parse()
                done += sum(1 for s in mine if s.id in rows)
        return total, done

    def run(self, samples: Mapping[str, list[Sample]] | None = None) -> list[dict]:
        """Generate every missing sample of this shard, then (first shard) score everything."""
        samples = samples or self.samples()
        try:
            for entry in self.spec.entries:
                for split, split_samples in samples.items():
                    self._generate_missing(entry, split, self.shard.mine(split_samples))
        except BaseException as err:
            self._mark("failed", str(err).splitlines()[0] if str(err) else type(err).__name__)
            raise
        if self.shard.index != 0:
            return []
        self._wait_for_shards(samples)
        return self.score(samples)

    # ---- generation ------------------------------------------------------------------------
    def _log(self, entry: Entry, split: str) -> SampleLog:
        return SampleLog(self.out / "samples" / entry.key / f"{split}{self.shard.suffix()}.jsonl")

    def _generate_missing(self, entry: Entry, split: str, samples: list[Sample]) -> None:
        log = self._log(entry, split)
        if self.repair:
            damaged = log.repair()
            if damaged:
                print(f"repaired {log.path}: removed damaged line(s) {', '.join(map(str, damaged))}; "
                      "those samples are generated again", file=sys.stderr)
        done = log.read()
        todo = [s for s in samples if s.id not in done]
        if not todo:
            return
        decoding = self._decoding()
        yes_no = split in self.spec.task.yes_no_splits()  # lines then record the answer's yes/no evidence
        part = self.progress.part(f"{entry.label} · {self.spec.task.name} {split}", len(samples),
                                  len(samples) - len(todo)) if self.progress else contextlib.nullcontext()
        with part:
            for batch in _batches(todo, 1 if decoding.do_sample else self.spec.batch_size):
                for row in self._generate_batch(entry, batch, decoding, yes_no):
                    log.append(row)
                    self.generated += 1
                    if self.progress:
                        self.progress.advance()

    def _generate_batch(self, entry: Entry, batch: list[Sample], decoding: Decoding,
                        yes_no: bool = False) -> list[dict]:
        keys = [self._cache_key(entry, s, decoding) for s in batch]
        cached = [self.cache.get(k) for k in keys]
        misses = [s for s, c in zip(batch, cached) if c is None]
        fresh = iter(self._run_model(entry, misses, decoding, yes_no) if misses else [])
        rows = []
        for sample, key, hit in zip(batch, keys, cached):
            row = {**hit, "cached": True} if hit is not None else next(fresh)
            if hit is None:
                self.cache.put(key, row)
            rows.append({"id": sample.id, **{k: v for k, v in row.items() if k != "id"}})
        return rows

    def _run_model(self, entry: Entry, batch: list[Sample], decoding: Decoding, yes_no: bool = False) -> list[dict]:
        if decoding.do_sample:  # one seed per sample: results do not depend on batching, sharding or resume
            decoding = replace(decoding, seed=_sample_seed(self.spec.seed, batch[0].id))
        self._warm_up(entry, batch, decoding)
        start = time.perf_counter()
        result = generate(self.loaded_lvlm, [s.image for s in batch], [s.prompt for s in batch], list(entry.methods),
                          decoding=decoding, yes_no=yes_no)
        seconds = (time.perf_counter() - start) / len(batch)
        evidence: list[dict | None] = [None] * len(batch)
        if yes_no:
            assert result.evidence is not None  # generate(yes_no=True) records it
            evidence = result.evidence
        return [{"text": text, "tokens": len(tokens), "seconds": seconds, "cached": False,
                 **({"yes_no": found} if yes_no else {})}
                for text, tokens, found in zip(result.texts, result.tokens, evidence)]

    def _warm_up(self, entry: Entry, batch: list[Sample], decoding: Decoding) -> None:
        """Run a configuration's first batch once, untimed and discarded, before timing it. The first
        calls of a process and of a method pay one-time costs (lazy initialisation, kernel compilation,
        allocator growth); timed, they fell on vanilla, which runs first, and at a small --limit every
        method looked cheaper than vanilla. Capped at a prefill and one decode step."""
        if entry.key in self.warmed:
            return
        self.warmed.add(entry.key)
        short = replace(decoding, max_new_tokens=min(decoding.max_new_tokens, WARM_UP_TOKENS))
        generate(self.loaded_lvlm, [s.image for s in batch], [s.prompt for s in batch], list(entry.methods),
                 decoding=short)

    def _decoding(self) -> Decoding:
        fields = dict(self.spec.task.protocol.decoding)
        if fields.get("do_sample"):
            fields.setdefault("seed", self.spec.seed)
        return Decoding(**fields)

    def _cache_key(self, entry: Entry, sample: Sample, decoding: Decoding) -> str:
        """The run identity's part that decides this output (model, weights fingerprint, dtype, the entry's
        parameters, decoding), plus the prompt, the image's content and the sample's seed."""
        return OutputCache.key(run=ident.generation_key(self.spec.identity(), entry.params),
                               decoding=asdict(decoding), prompt=sample.prompt,
                               image=ident.file_sha256(sample.image),
                               seed=_sample_seed(self.spec.seed, sample.id) if decoding.do_sample else None)

    # ---- shards ----------------------------------------------------------------------------
    def _mark(self, state: str, reason: str = "") -> None:
        if self.shard.count > 1:
            mark_shard(self.out, self.shard, state, reason)

    def _wait_for_shards(self, samples: Mapping[str, list[Sample]]) -> None:
        """Shard 0 scores once every sample of every shard is on disk, written under this run's identity.
        A file barrier needs no process group, so it works the same under torchrun, `accelerate launch`
        and manual `--shard i/n`. A shard that failed, was refused or ran another configuration stops the
        wait at once; a shard that makes no progress for `shard_timeout` seconds stops it, named."""
        if self.shard.count == 1:
            return
        last, since = None, time.monotonic()
        while True:
            self._stop_for_stopped_shards()
            mismatched = self._mismatched_shards()
            fresh = {name: why for name, (why, when) in mismatched.items() if when >= self.started}
            if fresh:
                name, why = next(iter(fresh.items()))
                raise HallucError(f"shard {name} ran another configuration ({why} differ from shard 0); its samples "
                                  "are not merged: rerun it with shard 0's options and --resume")
            missing = self._missing_by_shard(samples)
            if not missing and not mismatched:
                return
            if sum(missing.values()) != last:  # progress: another shard wrote a sample
                last, since = sum(missing.values()), time.monotonic()
            elif time.monotonic() - since > self.shard_timeout:
                parts = [f"shard {i} of {self.shard.count} misses {n} of its samples" for i, n in missing.items()]
                parts += [f"shard {name} last ran another configuration ({why})"
                          for name, (why, _) in mismatched.items()]
                raise HallucError(f"no new sample from the other shards for {self.shard_timeout:g} s "
                                  f"(--shard-timeout): {'; '.join(parts)}; finished samples are kept: rerun those "
                                  "shards with the same options, then shard 0 with --resume")
            time.sleep(0.5)

    def _stop_for_stopped_shards(self) -> None:
        """A shard that failed or was refused since this shard started ends the wait, with its reason."""
        for marker in sorted((self.out / "shards").glob("*-of-*.*")):
            if marker.suffix in (".failed", ".refused") and marker.stat().st_mtime >= self.started:
                reason = marker.read_text(encoding="utf-8", errors="replace").strip()
                raise HallucError(f"shard {marker.stem} {marker.suffix[1:]}{': ' + reason if reason else ''}; "
                                  "finished samples are kept: fix it and rerun it, then shard 0 with --resume")

    def _mismatched_shards(self) -> dict[str, tuple[str, float]]:
        """{shard "i-of-n": (differing fields, when recorded)} for every shard whose samples are in the run
        directory but whose identity is not this run's (a record with less coverage is compatible)."""
        mine = self.spec.identity()
        found = {}
        for name in self._shards_with_samples():
            record_path = self.out / "shards" / f"{name}.json"
            record = ident.read_record(record_path)
            if record is None:
                found[name] = ("no identity recorded", 0.0)
                continue
            if record == mine:
                continue
            conflicts = ident.resume_conflicts(record, mine, self.spec.reread)
            if conflicts:
                found[name] = (ident.describe_differences(record, mine, conflicts), record_path.stat().st_mtime)
        return found

    def _shards_with_samples(self) -> list[str]:
        """Every "i-of-n" whose sample files are in the run directory, other than this shard's."""
        names = {m.group(1) for p in (self.out / "samples").glob("*/*.shard-*-of-*.jsonl")
                 if (m := re.search(r"\.shard-(\d+-of-\d+)\.jsonl$", p.name))}
        return sorted(names - {f"{self.shard.index}-of-{self.shard.count}"})

    def _missing_by_shard(self, samples: Mapping[str, list[Sample]]) -> dict[int, int]:
        """{shard index: samples of that shard not yet on disk}, for shards with any missing."""
        missing: dict[int, int] = {}
        for entry in self.spec.entries:
            for split, split_samples in samples.items():
                done = read_outputs(self.out, entry.key, split)
                for index in range(self.shard.count):
                    count = sum(s.id not in done for s in Shard(index, self.shard.count).mine(split_samples))
                    if count:
                        missing[index] = missing.get(index, 0) + count
        return missing

    # ---- scoring ---------------------------------------------------------------------------
    def score(self, samples: Mapping[str, list[Sample]]) -> list[dict]:
        """Score every entry and split; a finished run that generated nothing now returns its stored
        results unchanged (so re-printing a run works on read-only storage)."""
        task = self.spec.task
        companions = companion_tasks(task)
        config = {**self.spec.describe(), "companions": {c.name: c.describe() for c in companions}}
        stored = self.out / "results.json"
        if not self.generated and stored.exists():
            previous = _read_results(stored)
            if previous is not None and previous.get("config") == _as_json(config):
                return previous["rows"]
        rows: dict[str, list[dict]] = {t.name: [] for t in [task, *companions]}
        for entry in self.spec.entries:
            for split, split_samples in samples.items():
                outputs = read_outputs(self.out, entry.key, split)
                texts = {s.id: outputs[s.id]["text"] if s.id in outputs else None for s in split_samples}
                metrics = task.score(split, split_samples, texts)
                rows[task.name].append(self._row(entry, split, metrics, self._outputs(outputs, split_samples)))
                for companion in companions:  # e.g. RePOPE: the same texts against corrected labels
                    if split not in companion.splits():
                        continue
                    asked = {s.id for s in split_samples}
                    kept = [s for s in companion.samples(split) if s.id in asked]
                    metrics = {**companion.score(split, kept, texts), "removed": len(asked) - len(kept)}
                    rows[companion.name].append(self._row(entry, split, metrics, self._outputs(outputs, kept),
                                                          companion))
        out = []
        for name, bench_rows in rows.items():
            out += bench_rows + benchmark_spec(name).summary_rows(bench_rows)
        write_json_atomic(stored, {"config": config, "rows": out})
        return out

    @staticmethod
    def _outputs(outputs: Mapping[str, dict], samples: Sequence[Sample]) -> list[dict]:
        return [outputs[s.id] for s in samples if s.id in outputs]

    def _row(self, entry: Entry, split: str, metrics: dict, outputs: list[dict], task: Task | None = None) -> dict:
        task = task or self.spec.task
        fresh = [o for o in outputs if not o.get("cached")]
        seconds = sum(o["seconds"] for o in fresh)
        return {"model": self.spec.model, "revision": self.loaded_lvlm.revision, "method": entry.label,
                "params": entry.params, "benchmark": task.name, "split": split,
                "protocol": task.protocol.name, "task_version": task.version,
                **({"question_set": qs} if (qs := self.spec.identity()["question_set"]) else {}),
                "seed": self.spec.seed, "limit": self.spec.limit, **metrics,
                "seconds_per_sample": seconds / len(fresh) if fresh else None,
                "tokens_per_second": sum(o["tokens"] for o in fresh) / seconds if seconds else None,
                "peak_memory_mb": _peak_memory_mb()}



def read_outputs(out: Path, entry_key: str, split: str) -> dict[str, dict]:
    """All finished samples of one entry and split, over every shard file (a damaged line is an error
    naming its file and line, never a silently missing sample)."""
    merged: dict[str, dict] = {}
    # the entry key and split may come from a results.json: plain names only, never a pattern or a path
    folder = out / "samples" / name_component(entry_key, "run entry")
    split = glob.escape(name_component(split, "split"))
    for path in sorted(folder.glob(f"{split}.jsonl")) + sorted(folder.glob(f"{split}.shard-*.jsonl")):
        merged.update(SampleLog(path).read())
    return merged


def _read_results(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _as_json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=str))


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), max(1, size)):
        yield items[i:i + size]


def _sample_seed(seed: int, sample_id: str) -> int:
    return int(hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest()[:12], 16)


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB; process-wide peak


@dataclass(frozen=True)
class RunOptions:
    """Everything about a run besides model, methods and benchmark."""

    splits: tuple[str, ...] | None = None
    protocol: str | None = None
    dataset: str = "coco"  # or "world": the toy world's POPE / CHAIR
    source: str = "auto"   # local files, the benchmark's HF dataset ("hf"), or auto (hf when no --images)
    images: Path | None = None
    data: Path | None = None
    limit: int | None = None
    seed: int = 0
    batch_size: int = 1
    out: Path | None = None
    resume: bool = False
    max_new_tokens: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    cache_dir: Path | None = None  # None: no output cache
    shard: Shard | None = None  # None: from RANK / WORLD_SIZE
    baseline: bool = True  # add vanilla ("none") when it is not among the methods
    shard_timeout: float = 1800.0  # seconds shard 0 waits at the barrier without a new sample from the others

    def __post_init__(self) -> None:
        timeout = self.shard_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
                or timeout <= 0:
            raise HallucError(f"--shard-timeout must be a number of seconds > 0; got {timeout!r}")
        for name, low in (("batch_size", 1), ("limit", 1), ("max_new_tokens", 1)):
            value = getattr(self, name)
            if value is None and name != "batch_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                flag = "--" + name.replace("_", "-")
                raise HallucError(f"{flag} must be an integer >= {low}; got {value!r}")
        check_seed("--seed", self.seed)
        check_number("--batch-size", self.batch_size, integer=True, low=1, high=MAX_BATCH)
        if self.max_new_tokens is not None:
            check_number("--max-new-tokens", self.max_new_tokens, integer=True, low=1, high=MAX_NEW_TOKENS)


# What a config.json from before run identities recorded, all of which must match to resume it.
_LEGACY_RESUME_KEYS = ("model", "methods", "benchmark", "protocol", "decoding", "task_version", "seed")


def default_out(model: str, benchmark: str, protocol: str) -> Path:
    """`runs/<model>_<benchmark>_<protocol>`, one plain folder name whatever the model id or path holds
    (a long local path keeps its last 80 characters and a hash of the whole)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{model}_{benchmark}_{protocol}").lstrip(".")
    if len(name) > 120:
        name = f"{name[-80:]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return Path("runs") / name_component(name or "run", "run name")


def check_run_dir(out: Path, spec: RunSpec, options: RunOptions, shard: Shard) -> None:
    """Refuse to mix runs before any work: an existing directory needs --resume and the same identity
    (`halluc.evaluation.identity`: coverage may grow); `--out` must be a directory halluc can create or use.
    A shard refused here leaves a `.refused` marker with the reason, so shard 0 stops waiting for it."""
    if out.exists() and not out.is_dir():
        raise HallucError(f"--out {out} is a file, not a directory")
    config_path = out / "config.json"
    if config_path.exists():
        if not options.resume and shard.index == 0:
            raise HallucError(f"run directory {out} already holds a run: pass --resume to continue it, "
                              "or --out DIR for a new one")
        previous = _read_results(config_path)
        if previous is None:
            raise HallucError(f"cannot resume {out}: {config_path} is not readable JSON")
        try:
            _check_same_run(out, previous, spec)
        except HallucError as err:
            if shard.count > 1 and shard.index != 0:
                with contextlib.suppress(OSError):
                    mark_shard(out, shard, "refused", str(err))
            raise
    elif options.resume:
        raise HallucError(f"nothing to resume: {config_path} does not exist")
    else:
        _check_writable(out)


def _check_same_run(out: Path, previous: dict, spec: RunSpec) -> None:
    stored = ident.stored_identity(previous)
    if stored is None:  # written before run identities: the fields it has
        as_stored = _as_json(spec.describe())
        changed = [k for k in _LEGACY_RESUME_KEYS if previous.get(k) != as_stored.get(k)]
        if changed:
            raise HallucError(f"cannot resume {out}: {', '.join(changed)} differ from the original run")
        return
    current = dict(spec.identity())
    for name in ("weights", "dtype"):  # known only once the model is loaded: checked again then
        if current[name] is None:
            current[name] = stored.get(name)
    conflicts = ident.resume_conflicts(stored, current, spec.reread)
    if conflicts:
        raise ident.refuse_resume(out, stored, current, conflicts)


def mark_shard(out: Path, shard: Shard, state: str, reason: str = "") -> None:
    """`shards/<i>-of-<n>.<state>` (failed, refused), holding the one-line reason."""
    (out / "shards").mkdir(parents=True, exist_ok=True)
    (out / "shards" / f"{shard.index}-of-{shard.count}.{state}").write_text(reason + "\n", encoding="utf-8")


def prepare_run_dir(out: Path, spec: RunSpec, options: RunOptions, shard: Shard) -> None:
    """Check the directory, then record the run's config (unchanged on a resume that changes nothing);
    every shard of several records its identity and clears its markers of an earlier attempt."""
    check_run_dir(out, spec, options, shard)
    if shard.count > 1:
        name = f"{shard.index}-of-{shard.count}"
        for state in ("failed", "refused"):
            (out / "shards" / f"{name}.{state}").unlink(missing_ok=True)
        shard_record = out / "shards" / f"{name}.json"
        if ident.read_record(shard_record) != spec.identity():
            write_json_atomic(shard_record, spec.identity())
    if shard.index != 0:
        return
    config_path = out / "config.json"
    options_json = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    record = {**spec.describe(), "options": options_json}
    previous = _read_results(config_path) if config_path.exists() else None
    if previous is not None and _settings(previous) == _settings(record):
        return  # a resume with the same settings: leave config.json (and read-only storage) alone
    write_json_atomic(config_path, {**record, "provenance": provenance()})


def _settings(config: dict) -> dict:
    """What a config records about the run, without the flag that resumed it."""
    options = {k: v for k, v in config.get("options", {}).items() if k != "resume"}
    return _as_json({**{k: v for k, v in config.items() if k not in ("options", "provenance")}, "options": options})


def _check_writable(out: Path) -> None:
    """One clear line when a new run directory cannot be made or written."""
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise HallucError(f"--out {out}: {existing} is a file, not a directory")
    if existing is not None and not os.access(existing, os.W_OK):
        raise HallucError(f"--out {out}: {existing} is not writable")


@contextlib.contextmanager
def run_lock(out: Path, shard: Shard) -> Iterator[None]:
    """Hold this shard's lock on the run directory while working on it: a second process resuming the
    same run is refused instead of generating everything twice. Read-only storage needs no lock."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / f".lock-{shard.index}-of-{shard.count}", "a")  # noqa: SIM115  (held for the block)
    except OSError as err:
        if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and (out / "config.json").exists():
            yield
            return
        raise HallucError(f"cannot use run directory {out}: {err.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise HallucError(f"run directory {out} is in use by another halluc process (shard {shard.index} of "
                          f"{shard.count}); wait for it to finish, or use another --out") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
