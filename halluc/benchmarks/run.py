"""`halluc run`: model x methods x benchmark, resumable, cached, shardable, with provenance.

Layout of a run directory:
    config.json                       what was asked, and provenance (versions, commit, device, seeds)
    samples/<entry>/<split>.jsonl      one line per finished sample (per shard: <split>.shard-i-of-n.jsonl)
    results.json                      one row per model x method x benchmark x split, `halluc score` keys
    .lock-<shard>                     held by the process working on that shard (a second one is refused)
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from halluc.benchmarks.provenance import provenance
from halluc.benchmarks.spec import benchmark_spec
from halluc.benchmarks.store import OutputCache, SampleLog, image_fingerprint, write_json_atomic
from halluc.benchmarks.tasks import Sample, Task, check_images
from halluc.engine.decoding import Decoding
from halluc.errors import HallucError
from halluc.generation.generate import generate
from halluc.interventions import Method, make_methods
from halluc.modeling.lvlm import LVLM
from halluc.progress import Progress


@dataclass(frozen=True)
class Entry:
    """One compared configuration: a stack of methods with their parameters (`vhr+vcd`)."""

    methods: tuple[Method, ...]

    @property
    def label(self) -> str:
        return "+".join(m.name for m in self.methods)

    @property
    def params(self) -> dict[str, dict]:
        return {m.name: asdict(m) for m in self.methods}

    @property
    def key(self) -> str:
        """Directory name: readable label plus a hash of the parameters."""
        digest = hashlib.sha256(json.dumps(self.params, sort_keys=True, default=str).encode()).hexdigest()[:8]
        return f"{re.sub(r'[^A-Za-z0-9_.+-]', '_', self.label)}-{digest}"


ALL_METHODS = "all"  # `--method all`: every registered method, each as one configuration


def expand_all(methods: Sequence[str]) -> list[str]:
    """`all` replaced by every registered method except `none` (aliases, which are stacks, left out), in
    registry order; a method also named on its own is kept once (without `all`, a repeat stays, to be refused)."""
    from halluc.interventions import method_names

    if ALL_METHODS not in methods:
        return list(methods)
    every = [n for n in method_names() if n != "none"]
    return list(dict.fromkeys(n for m in methods for n in (every if m == ALL_METHODS else [m])))


def parse_entries(methods: Sequence[str], params: Mapping[str, Any], baseline: bool = True) -> list[Entry]:
    """`["vcd", "vhr+vcd"]` -> entries (`all` = every registered method); parameters go to every entry
    that has them; vanilla first."""
    stacks = [tuple(m.split("+")) for m in expand_all(methods)] or [("none",)]
    if baseline and ("none",) not in stacks:
        stacks.insert(0, ("none",))
    repeated = sorted({"+".join(s) for s in stacks if stacks.count(s) > 1})
    if repeated:
        raise HallucError(f"method '{repeated[0]}' is listed twice; each --method is one compared configuration")
    used: set[str] = set()
    entries = []
    for stack in stacks:
        mine = {k: v for k, v in params.items() if _belongs(k, stack)}
        used |= set(mine)
        entries.append(Entry(tuple(make_methods(list(stack), mine))))
    unused = sorted(set(params) - used)
    if unused:
        raise HallucError(f"parameter '{unused[0]}' belongs to none of the methods {', '.join(methods)}")
    return entries


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
    """Everything that defines a run's outputs (recorded in config.json)."""

    model: str
    entries: list[Entry]
    task: Task
    limit: int | None = None
    seed: int = 0
    batch_size: int = 1

    def describe(self) -> dict:
        return {"model": self.model, "methods": [{"label": e.label, "key": e.key, "params": e.params}
                                                 for e in self.entries],
                **self.task.describe(), "limit": self.limit, "seed": self.seed, "batch_size": self.batch_size}


WARM_UP_TOKENS = 2  # a configuration's untimed warm-up batch: its prefill and one decode step


@dataclass
class Runner:
    spec: RunSpec
    lvlm: LVLM
    out: Path
    cache: OutputCache = field(default_factory=lambda: OutputCache(None))
    shard: Shard = field(default_factory=Shard)
    progress: Progress | None = None  # the job's progress (shared by the runs of one command)
    repair: bool = False  # rewrite damaged sample logs without their bad lines (--resume)
    generated: int = field(default=0, init=False)  # samples this process generated
    warmed: set[str] = field(default_factory=set, init=False)  # entries whose untimed warm-up batch ran

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
        except BaseException:
            self._mark("failed")
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
        part = self.progress.part(f"{entry.label} · {self.spec.task.name} {split}", len(samples),
                                  len(samples) - len(todo)) if self.progress else contextlib.nullcontext()
        with part:
            for batch in _batches(todo, 1 if decoding.do_sample else self.spec.batch_size):
                for row in self._generate_batch(entry, batch, decoding):
                    log.append(row)
                    self.generated += 1
                    if self.progress:
                        self.progress.advance()

    def _generate_batch(self, entry: Entry, batch: list[Sample], decoding: Decoding) -> list[dict]:
        keys = [self._cache_key(entry, s, decoding) for s in batch]
        cached = [self.cache.get(k) for k in keys]
        misses = [s for s, c in zip(batch, cached) if c is None]
        fresh = iter(self._run_model(entry, misses, decoding) if misses else [])
        rows = []
        for sample, key, hit in zip(batch, keys, cached):
            row = {**hit, "cached": True} if hit is not None else next(fresh)
            if hit is None:
                self.cache.put(key, row)
            rows.append({"id": sample.id, **{k: v for k, v in row.items() if k != "id"}})
        return rows

    def _run_model(self, entry: Entry, batch: list[Sample], decoding: Decoding) -> list[dict]:
        if decoding.do_sample:  # one seed per sample: results do not depend on batching, sharding or resume
            decoding = replace(decoding, seed=_sample_seed(self.spec.seed, batch[0].id))
        self._warm_up(entry, batch, decoding)
        start = time.perf_counter()
        result = generate(self.lvlm, [s.image for s in batch], [s.prompt for s in batch], list(entry.methods),
                          decoding=decoding)
        seconds = (time.perf_counter() - start) / len(batch)
        return [{"text": text, "tokens": len(tokens), "seconds": seconds, "cached": False}
                for text, tokens in zip(result.texts, result.tokens)]

    def _warm_up(self, entry: Entry, batch: list[Sample], decoding: Decoding) -> None:
        """Run a configuration's first batch once, untimed and discarded, before timing it. The first
        calls of a process and of a method pay one-time costs (lazy initialisation, kernel compilation,
        allocator growth); timed, they fell on vanilla, which runs first, and at a small --limit every
        method looked cheaper than vanilla. Capped at a prefill and one decode step."""
        if entry.key in self.warmed:
            return
        self.warmed.add(entry.key)
        short = replace(decoding, max_new_tokens=min(decoding.max_new_tokens, WARM_UP_TOKENS))
        generate(self.lvlm, [s.image for s in batch], [s.prompt for s in batch], list(entry.methods), decoding=short)

    def _decoding(self) -> Decoding:
        fields = dict(self.spec.task.protocol.decoding)
        if fields.get("do_sample"):
            fields.setdefault("seed", self.spec.seed)
        return Decoding(**fields)

    def _cache_key(self, entry: Entry, sample: Sample, decoding: Decoding) -> str:
        return OutputCache.key(model=self.spec.model, revision=self.lvlm.revision, methods=entry.params,
                               protocol=self.spec.task.protocol.name, decoding=asdict(decoding),
                               prompt=sample.prompt, image=image_fingerprint(sample.image),
                               seed=_sample_seed(self.spec.seed, sample.id) if decoding.do_sample else None)

    # ---- shards ----------------------------------------------------------------------------
    def _mark(self, state: str) -> None:
        if self.shard.count > 1:
            (self.out / "shards").mkdir(exist_ok=True)
            (self.out / "shards" / f"{self.shard.index}-of-{self.shard.count}.{state}").touch()

    def _wait_for_shards(self, samples: Mapping[str, list[Sample]], timeout: float = 7 * 24 * 3600) -> None:
        """Shard 0 scores once every sample of every shard is on disk. A file barrier needs no process
        group, so it works the same under torchrun, `accelerate launch` and manual `--shard i/n`."""
        if self.shard.count == 1:
            return
        deadline = time.monotonic() + timeout
        while not self._complete(samples):
            failed = sorted((self.out / "shards").glob("*.failed"))
            if failed or time.monotonic() > deadline:
                why = f"shard {failed[0].stem} failed" if failed else "timed out"
                raise HallucError(f"{why} before all samples were generated; rerun with --resume")
            time.sleep(0.5)

    def _complete(self, samples: Mapping[str, list[Sample]]) -> bool:
        return all(set(s.id for s in split_samples) <= set(read_outputs(self.out, e.key, split))
                   for e in self.spec.entries for split, split_samples in samples.items())

    # ---- scoring ---------------------------------------------------------------------------
    def score(self, samples: Mapping[str, list[Sample]]) -> list[dict]:
        """Score every entry and split; a finished run that generated nothing now returns its stored
        results unchanged (so re-printing a run works on read-only storage)."""
        task = self.spec.task
        companions = task.companions()
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
        return {"model": self.spec.model, "revision": self.lvlm.revision, "method": entry.label,
                "params": entry.params, "benchmark": task.name, "split": split,
                "protocol": task.protocol.name, "task_version": task.version,
                "seed": self.spec.seed, "limit": self.spec.limit, **metrics,
                "seconds_per_sample": seconds / len(fresh) if fresh else None,
                "tokens_per_second": sum(o["tokens"] for o in fresh) / seconds if seconds else None,
                "peak_memory_mb": _peak_memory_mb()}



def read_outputs(out: Path, entry_key: str, split: str) -> dict[str, dict]:
    """All finished samples of one entry and split, over every shard file (a damaged line is an error
    naming its file and line, never a silently missing sample)."""
    merged: dict[str, dict] = {}
    folder = out / "samples" / entry_key
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

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("limit", 1), ("max_new_tokens", 1)):
            value = getattr(self, name)
            if value is None and name != "batch_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                flag = "--" + name.replace("_", "-")
                raise HallucError(f"{flag} must be an integer >= {low}; got {value!r}")


# Fields that must match to resume a run (limit and batch size may change).
_RESUME_KEYS = ("model", "methods", "benchmark", "protocol", "decoding", "task_version", "seed")


def default_out(model: str, benchmark: str, protocol: str) -> Path:
    return Path("runs") / re.sub(r"[^A-Za-z0-9_.-]", "_", f"{model}_{benchmark}_{protocol}")


def check_run_dir(out: Path, spec: RunSpec, options: RunOptions, shard: Shard) -> None:
    """Refuse to mix runs before any work: an existing directory needs --resume and the same configuration;
    `--out` must be a directory halluc can create or use."""
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
        as_stored = _as_json(spec.describe())
        changed = [k for k in _RESUME_KEYS if previous.get(k) != as_stored.get(k)]
        if changed:
            raise HallucError(f"cannot resume {out}: {', '.join(changed)} differ from the original run")
    elif options.resume:
        raise HallucError(f"nothing to resume: {config_path} does not exist")
    else:
        _check_writable(out)


def prepare_run_dir(out: Path, spec: RunSpec, options: RunOptions, shard: Shard) -> None:
    """Check the directory, then record the run's config (unchanged on a resume that changes nothing)."""
    check_run_dir(out, spec, options, shard)
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
