"""The Python API: everything the CLI does goes through these functions."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from halluc.benchmarks.build import build_task
from halluc.benchmarks.run import Runner, RunOptions, RunSpec, Shard, default_out, parse_entries, prepare_run_dir
from halluc.benchmarks.store import OutputCache
from halluc.engine.decoding import Decoding
from halluc.generation.generate import Generation, pair_inputs
from halluc.generation.generate import generate as _generate
from halluc.images import load_images
from halluc.interventions import aliases, check_compatible, make_methods, method_class, method_names
from halluc.modeling.loading import check_model_name, load
from halluc.modeling.lvlm import LVLM
from halluc.modeling.registry import checkpoints, known_family, offline_models

__all__ = ["Decoding", "Generation", "LVLM", "apply", "generate", "load", "check_request", "load_images",
           "make_methods", "methods", "models", "run", "RunOptions"]


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


@contextlib.contextmanager
def apply(model: LVLM, method: str | Sequence[str], **params) -> Iterator[LVLM]:
    """Apply methods to every `generate` call on `model` inside the block; the model is unchanged after.

        >>> with halluc.apply(m, "vhr", alpha=2):
        ...     halluc.generate(m, images, prompts)
    """
    added = make_methods(method, params)
    check_compatible(model.adapter, model.active + added)
    model.active.extend(added)
    try:
        yield model
    finally:
        for m in added:  # remove exactly ours, by identity, whatever happened inside
            model.active.remove(next(a for a in model.active if a is m))


def check_request(model: str, images, prompts, method: str | Sequence[str] = "none", **params) -> None:
    """Every cheap check `load` + `generate` would make, before any weights are loaded."""
    check_model_name(model)
    make_methods(method, params)
    pair_inputs(images, prompts)
    load_images(images if isinstance(images, (list, tuple)) else [images])


def run(model: str, methods: Sequence[str] = ("none",), benchmark: str = "pope",
        options: RunOptions | None = None, **params) -> tuple[Path, list[dict]]:
    """Run MODEL with each of METHODS (vanilla added) on BENCHMARK; returns the run directory and result rows.

    Each entry of `methods` is one compared configuration; `"vhr+vcd"` stacks two methods.
    Resumable (`options.resume`), cached (`options.cache_dir`), sharded by RANK/WORLD_SIZE.
    """
    options = options or RunOptions()
    check_model_name(model)  # before any benchmark data is prepared
    task = build_task(benchmark, protocol=options.protocol, splits=list(options.splits or []) or None,
                      data=options.data, images=options.images, max_new_tokens=options.max_new_tokens,
                      dataset=options.dataset, source=options.source)
    spec = RunSpec(model, parse_entries(methods, params, options.baseline), task, options.limit, options.seed,
                   options.batch_size)
    family = known_family(model)
    for entry in spec.entries if family else []:  # refuse unsupported families before loading weights
        check_compatible(family, entry.methods)
    shard = options.shard or Shard.from_env()
    where = benchmark if options.dataset == "coco" else f"{options.dataset}-{benchmark}"
    out = Path(options.out or default_out(model, where, task.protocol.name))
    prepare_run_dir(out, spec, options, shard)
    lvlm = load(model, device=options.device, dtype=options.dtype, seed=options.seed)
    for entry in spec.entries:
        check_compatible(lvlm.adapter, entry.methods)
    runner = Runner(spec, lvlm, out, cache=OutputCache(options.cache_dir), shard=shard)
    return out, runner.run()


def methods() -> list[dict]:
    """Every registered method with its description and parameters (name, default, range, doc);
    aliases (e.g. `ritual-vcd`) are listed with the stack they stand for."""
    rows = []
    for name in method_names():
        cls = method_class(name)
        rows.append({"name": name, "kind": cls.kind, "paper": cls.paper, "formula": cls.formula,
                     "cost": cls.cost, "families": sorted(cls.families) if cls.families else "all",
                     "modes": list(cls.modes), "parameters": cls.parameters()})
    for name, stack in aliases().items():
        rows.append({"name": name, "kind": "alias", "paper": f"stacks {' + '.join(stack)}", "formula": "",
                     "cost": "", "families": "as its methods", "modes": [], "parameters": [], "alias_of": list(stack)})
    return rows


def models() -> list[dict]:
    """Known model aliases (real checkpoints) and offline models (tiny-*, toy-llava)."""
    rows = [{"alias": c.alias, "hub_id": c.hub_id, "family": f.name, "note": c.note}
            for f, c in checkpoints().values()]
    rows += [{"alias": m.name, "hub_id": "(offline)", "family": m.family, "note": m.note}
             for m in offline_models().values()]
    return rows
