"""The Python API's model calls: load, wrap, generate, apply, run (imported on first use by `halluc.api`)."""
from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from halluc.api.calibration import calibrate  # noqa: F401  (halluc.calibrate)
from halluc.benchmarks.build import build_task
from halluc.engine.decoding import Decoding
from halluc.errors import HallucError
from halluc.evaluation.identity import question_set_note, weights_before_load
from halluc.evaluation.run import (
    Runner,
    RunOptions,
    RunSpec,
    Shard,
    check_run_dir,
    default_out,
    parse_entries,
    prepare_run_dir,
    run_lock,
)
from halluc.evaluation.store import OutputCache
from halluc.generation.generate import Generation, check_applied_once, check_context, check_modes, pair_inputs
from halluc.generation.generate import generate as _generate
from halluc.images import check_image_file, load_images
from halluc.interventions import aliases, check_compatible, make_methods, method_class, method_names
from halluc.interventions.attach import unsupported
from halluc.modeling.base import Adapter
from halluc.modeling.generic import GENERIC, GENERIC_DECLARATION, GenericAdapter
from halluc.modeling.loading import check_device_and_dtype, check_model_name, load, load_dtype
from halluc.modeling.loading import wrap as _wrap
from halluc.modeling.lvlm import LVLM
from halluc.modeling.placeholders import check_user_text
from halluc.modeling.registry import checkpoints, families, known_family, offline_models
from halluc.modeling.registry import family as family_record
from halluc.progress import Progress

__all__ = ["Decoding", "Generation", "LVLM", "apply", "available_methods", "generate", "load", "check_request",
           "load_images", "make_methods", "methods", "models", "plan_runs", "run", "run_benchmarks", "RunOptions",
           "support_matrix", "wrap", "parse_shard", "refusal", "check_generation", "generation"]


def generate(model: LVLM, images, prompts, method: str | Sequence[str] = "none", *, max_new_tokens: int = 64,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             num_beams: int = 1, seed: int | None = None, return_scores: bool = False, **params):
    """Generate answers for (image, prompt) pairs with a method (or a list of methods) applied.

    Method parameters are keyword arguments (`alpha=2`), or dotted (`**{"vcd.alpha": 2}`) when
    several methods are stacked. Returns the texts, or a `Generation` with per-step scores when
    `return_scores=True`.

        >>> m = halluc.load("tiny-llava")
        >>> halluc.generate(m, ["cat.png"], ["What is in the image?"], max_new_tokens=8)
    """
    decoding = Decoding(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                        top_p=top_p, top_k=top_k, num_beams=num_beams, seed=seed)
    result = _generate(model, images, prompts, method, decoding=decoding, params=params,
                       return_scores=return_scores)
    return result if return_scores else result.texts


def generation(model: LVLM, images, prompts, method: str | Sequence[str] = "none", *, decoding: Decoding,
               **params) -> Generation:
    """`generate` with its decoding settings as one `Decoding`, returning the `Generation`: texts and each
    row's generated token ids (no per-step scores). The server's call (`halluc serve`)."""
    return _generate(model, images, prompts, method, decoding=decoding, params=params)


def check_generation(model: LVLM, images, prompts, method: str | Sequence[str] = "none", *,
                     decoding: Decoding, **params) -> None:
    """The checks `generate` makes on a loaded model before it runs (parameters, family support, decoding
    mode, inputs), so that a server refuses one bad request alone instead of failing the batch it joins."""
    chosen = [m for m in model.active + make_methods(method, params) if m.name != "none"]
    check_compatible(model.adapter, chosen)
    check_modes(chosen, decoding)
    pair_inputs(images, prompts)


@contextlib.contextmanager
def apply(model: LVLM, method: str | Sequence[str], **params) -> Iterator[LVLM]:
    """Apply methods to every `generate` call on `model` inside the block; the model is unchanged after.

        >>> with halluc.apply(m, "vhr", alpha=2):
        ...     halluc.generate(m, images, prompts)
    """
    added = make_methods(method, params)
    check_applied_once(model.active + added)
    check_compatible(model.adapter, model.active + added)
    model.active.extend(added)
    try:
        yield model
    finally:
        for m in added:  # remove exactly ours, by identity, whatever happened inside
            model.active.remove(next(a for a in model.active if a is m))


def check_request(model: str, images, prompts, method: str | Sequence[str] = "none", *,
                  decoding: Decoding | None = None, device: str = "auto", dtype: str = "auto", **params) -> None:
    """Every cheap check `load` + `generate` would make, before any weights are loaded."""
    check_model_name(model)
    check_device_and_dtype(device, dtype)
    check_modes(make_methods(method, params), decoding or Decoding())
    pair_inputs(images, prompts)
    load_images(images if isinstance(images, (list, tuple)) else [images])


@dataclass
class PlannedRun:
    """One benchmark of a run, checked before any work starts."""

    benchmark: str
    out: Path
    spec: RunSpec
    shard: Shard
    samples: dict = field(default_factory=dict)


def plan_runs(model: str, methods: Sequence[str], benchmarks: Sequence[str], options: RunOptions, *,
              controls: bool = False, seeds: int = 1, **params) -> list[PlannedRun]:
    """Every check a run makes before loading weights or generating anything, for every benchmark at once:
    the model name, the methods and their parameters, stacking and family conflicts, the benchmark files,
    the images and the run directories.

    `controls`: add the control methods that fit the benchmarks' decoding (`control_methods`).
    `seeds`: a sampling protocol runs with seeds seed, seed+1, ..., each in `<out>/seed-<s>` (greedy and
    beam protocols run once)."""
    check_model_name(model)
    check_device_and_dtype(options.device, options.dtype)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise HallucError(f"--seeds must be an integer >= 1; got {seeds!r}")
    entries = parse_entries(methods, params, options.baseline)
    tasks = {benchmark: build_task(benchmark, protocol=options.protocol, splits=list(options.splits or []) or None,
                                   data=options.data, images=options.images, max_new_tokens=options.max_new_tokens,
                                   dataset=options.dataset, source=options.source)
             for benchmark in dict.fromkeys(benchmarks)}
    decodings = [Decoding(**task.protocol.decoding) for task in tasks.values()]
    if controls:
        wanted = [m for m in control_methods([d.mode for d in decodings]) if m not in methods]
        entries = parse_entries([*methods, *wanted], params, options.baseline)
    family = known_family(model)
    for entry in entries:
        if family:  # refuse unsupported families before loading weights
            check_compatible(family, entry.methods)
        for decoding in decodings:  # and decoding modes a method does not define
            check_modes(entry.methods, decoding)
    shard = options.shard or Shard.from_env()
    weights = weights_before_load(model, options.seed)
    dtype = str(load_dtype(model, options.dtype, options.device)).removeprefix("torch.")
    plans = []
    for (benchmark, task), decoding in zip(tasks.items(), decodings):
        check_questions(benchmark, task, options.limit)
        where = benchmark if options.dataset == "coco" else f"{options.dataset}-{benchmark}"
        out = Path(options.out) / benchmark if options.out and len(benchmarks) > 1 else options.out
        out = Path(out or default_out(model, where, task.protocol.name))
        repeats = [options.seed + i for i in range(seeds)] if decoding.do_sample and seeds > 1 else [options.seed]
        for seed in repeats:
            spec = RunSpec(model, entries, task, options.limit, seed, options.batch_size, weights, dtype)
            where_to = out / f"seed-{seed}" if len(repeats) > 1 else out
            check_run_dir(where_to, spec, options, shard)
            plans.append(PlannedRun(benchmark, where_to, spec, shard))
    return plans


CONTROLS = ("yes-prompt", "yes-bias", "logit-shift", "apc")


def control_methods(modes: Sequence[str]) -> list[str]:
    """The controls `halluc run --controls` adds for benchmarks decoded in `modes` ("greedy", "sample",
    "beam"): each control that defines every one of them; `apc` only when one samples (it is the identity
    under greedy decoding and beam search)."""
    chosen = []
    for name in CONTROLS:
        if all(mode in method_class(name).modes for mode in modes) and (name != "apc" or "sample" in modes):
            chosen.append(name)
    return chosen
def check_questions(benchmark: str, task, limit: int | None) -> None:
    """Refuse a benchmark question holding an image placeholder, or an image beyond the size bounds, before any
    work (either would fail mid-run)."""
    images = set()
    for split in task.splits():
        for sample in task.samples(split)[:limit]:
            check_user_text(sample.prompt, f"{benchmark} {split} question {sample.id}")
            images.add(sample.image)
    for image in sorted(images):
        check_image_file(image)


def run_benchmarks(model: str, methods: Sequence[str] = ("none",), benchmarks: Sequence[str] = ("pope",),
                   options: RunOptions | None = None, *, on_plan=None, controls: bool = False, seeds: int = 1,
                   **params) -> list[tuple[Path, list[dict]]]:
    """Run MODEL with each of METHODS (vanilla added) on every benchmark: everything is checked first,
    the model is loaded once, and one progress display covers the whole job.

    `on_plan(plans, total, done)` is called once the work is known (the CLI prints the summary there).
    Returns (run directory, result rows) per benchmark.
    """
    options = options or RunOptions()
    plans = plan_runs(model, methods, benchmarks, options, controls=controls, seeds=seeds, **params)
    for plan in plans:
        note = question_set_note(plan.spec.task)
        if note:
            print(f"note: {note}", file=sys.stderr)
    runners = [Runner(p.spec, None, p.out, cache=OutputCache(options.cache_dir), shard=p.shard,
                      repair=options.resume, shard_timeout=options.shard_timeout) for p in plans]
    lvlm = load(model, device=options.device, dtype=options.dtype, seed=options.seed)
    for entry in plans[0].spec.entries:
        check_compatible(lvlm.adapter, entry.methods)
    for plan, runner in zip(plans, runners):
        runner.lvlm = lvlm
        if plan.spec.loaded(lvlm):  # a hub commit or dtype known only now: checked before any generation
            check_run_dir(plan.out, plan.spec, options, plan.shard)
        # a protocol's (or --max-new-tokens') length beyond the model's context: before any generation
        check_context(lvlm, plan.spec.task.protocol.decoding.get("max_new_tokens", Decoding().max_new_tokens))
    counts = []
    for plan, runner in zip(plans, runners):
        plan.samples = runner.samples()
        counts.append(runner.pending(plan.samples))
    total, done = sum(c[0] for c in counts), sum(c[1] for c in counts)
    if on_plan is not None:
        on_plan(plans, total, done)
    results = []
    with Progress(f"halluc run {model}", total, done, unit="generations") as progress:
        for plan, runner in zip(plans, runners):
            with run_lock(plan.out, plan.shard):
                prepare_run_dir(plan.out, plan.spec, options, plan.shard)
                runner.progress = progress
                results.append((plan.out, runner.run(plan.samples)))
    return results


def run(model: str, methods: Sequence[str] = ("none",), benchmark: str = "pope",
        options: RunOptions | None = None, **params) -> tuple[Path, list[dict]]:
    """Run MODEL with each of METHODS (vanilla added) on BENCHMARK; returns the run directory and result rows.

    Each entry of `methods` is one compared configuration; `"vhr+vcd"` stacks two methods.
    Resumable (`options.resume`), cached (`options.cache_dir`), sharded by RANK/WORLD_SIZE.
    """
    (result,) = run_benchmarks(model, methods, [benchmark], options, **params)
    return result


def methods() -> list[dict]:
    """Every registered method with its description and parameters (name, default, range, doc);
    aliases (e.g. `ritual-vcd`) are listed with the stack they stand for."""
    rows = []
    for name in method_names():
        cls = method_class(name)
        rows.append({"name": name, "kind": cls.kind, "category": cls.category, "paper": cls.paper,
                     "formula": cls.formula,
                     "cost": cls.cost, "families": sorted(cls.families) if cls.families else "all",
                     "modes": list(cls.modes), "parameters": cls.parameters()})
    for name, stack in aliases().items():
        rows.append({"name": name, "kind": "alias", "category": "method", "paper": f"stacks {' + '.join(stack)}",
                     "formula": "",
                     "cost": "", "families": "as its methods", "modes": [], "parameters": [], "alias_of": list(stack)})
    return rows


def wrap(model, processor, *, name: str | None = None, revision: str | None = None) -> LVLM:
    """The LVLM `load` would give, around a model you loaded yourself: any dtype, a `device_map` over
    several devices (accelerate's dispatch), quantised weights transformers supports. Every method then
    works with `generate` and `apply` as after `load`.

        >>> model = Qwen2_5_VLForConditionalGeneration.from_pretrained(hub_id, device_map="auto", dtype="auto")
        >>> m = halluc.wrap(model, AutoProcessor.from_pretrained(hub_id))
        >>> halluc.generate(m, images, prompts, method="vcd")

    A model type no family record knows gets the generic adapter (image positions only); a warning then
    lists the methods that run on it (`available_methods(m)` gives the list).
    """
    lvlm = _wrap(model, processor, name=name, revision=revision)
    if isinstance(lvlm.adapter, GenericAdapter):
        refused = [n for n in _method_names() if refusal(lvlm, n) is not None]
        available = available_methods(lvlm)
        controls = [n for n in available if _is_control(n)]
        warnings.warn(f"{type(model).__name__}: no family record for model type '{model.config.model_type}', so halluc "
                      f"uses its generic adapter (image positions, no 2-D grid, no vision CLS token). Available "
                      f"methods: {', '.join(n for n in available if n not in controls)}; controls: "
                      f"{', '.join(controls)}; refused: {', '.join(refused)}.", stacklevel=2)
    return lvlm


def refusal(target: str | Adapter | LVLM, method: str) -> str | None:
    """Why `method` (at its default parameters; an alias stands for its stack) is refused on `target`
    (a family name, "generic", an adapter or a loaded model): `check_compatible`'s one line, or None."""
    try:
        check_compatible(_adapter(target), make_methods(method, {}))
    except HallucError as err:
        return str(err)
    return None


def _is_control(name: str) -> bool:
    return name in method_names() and method_class(name).category == "control"


def available_methods(target: str | Adapter | LVLM) -> list[str]:
    """The methods (and aliases) that run on a loaded model, an adapter or a family ("generic" included)."""
    return [name for name in _method_names() if refusal(target, name) is None]


def support_matrix() -> list[dict]:
    """Method x family, for every method (aliases included) and family record, plus the generic adapter:
    `reason` is None where the method runs at its default parameters, else the refusal (one line);
    `short` says the same in a few words (e.g. "needs 2-D image grids", "llava only")."""
    rows = []
    for name in _method_names():
        for target in [f.name for f in families()] + [GENERIC]:
            adapter = _adapter(target)
            short = next((why for m in make_methods(name, {}) if (why := unsupported(adapter, m))), None)
            rows.append({"method": name, "family": target, "reason": refusal(adapter, name), "short": short})
    return rows


def _adapter(target: str | Adapter | LVLM) -> Adapter:
    if isinstance(target, LVLM):
        return target.adapter
    if isinstance(target, str):
        return GENERIC_DECLARATION if target == GENERIC else family_record(target).adapter
    return target


def _method_names() -> list[str]:
    return [n for n in method_names() if n != "none"] + list(aliases())


def models() -> list[dict]:
    """Known model aliases (real checkpoints) and offline models (tiny-*, toy-llava)."""
    rows = [{"alias": c.alias, "hub_id": c.hub_id, "family": f.name, "note": c.note}
            for f, c in checkpoints().values()]
    rows += [{"alias": m.name, "hub_id": "(offline)", "family": m.family, "note": m.note}
             for m in offline_models().values()]
    return rows


def parse_shard(text: str | None) -> Shard | None:
    """`I/N` (shard I of N, as `--shard` takes it), or None for RANK / WORLD_SIZE from the launcher."""
    if text is None:
        return None
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit() or not 0 <= int(index) < int(count):
        raise HallucError(f"--shard expects I/N with 0 <= I < N, got '{text}'")
    return Shard(int(index), int(count))
