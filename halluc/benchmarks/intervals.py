"""Paired bootstrap intervals for a run: rebuild its task from config.json, score aligned units."""
from __future__ import annotations

import json
from pathlib import Path

from halluc.benchmarks.build import build_task
from halluc.benchmarks.report import paired_bootstrap
from halluc.benchmarks.spec import benchmark_spec
from halluc.benchmarks.run import read_outputs
from halluc.errors import HallucError


def run_intervals(run_dir: Path, n: int = 1000, seed: int = 0) -> dict:
    """{((model, benchmark, protocol, split), method): (low, high)} for every non-vanilla method."""
    config = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
    options = config["options"]
    try:
        task = build_task(config["benchmark"], protocol=config["protocol"], splits=options.get("splits"),
                          data=_path(options.get("data")), images=_path(options.get("images")),
                          max_new_tokens=options.get("max_new_tokens"), dataset=options.get("dataset", "coco"))
    except HallucError:
        return {}  # benchmark files moved: report without intervals rather than fail
    metric = benchmark_spec(config["benchmark"]).headline
    entries = {m["label"]: m["key"] for m in config["methods"]}
    if "none" not in entries:
        return {}
    intervals = {}
    for split in task.splits():
        samples = task.samples(split)[: config.get("limit")]
        units = {label: task.units(split, samples, _texts(run_dir, key, split, samples)) for label, key in entries.items()}
        for label in entries:
            if label != "none":
                group = (config["model"], config["benchmark"], task.protocol.name, split)
                aggregate = lambda us, s=split: task.aggregate(s, us)  # noqa: E731
                intervals[(group, label)] = paired_bootstrap(units["none"], units[label], aggregate, metric, n, seed)
    return intervals


def _texts(run_dir: Path, key: str, split: str, samples) -> dict:
    outputs = read_outputs(Path(run_dir), key, split)
    return {s.id: outputs[s.id]["text"] if s.id in outputs else None for s in samples}


def _path(value):
    return Path(value) if value else None
