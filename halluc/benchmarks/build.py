"""From command-line words (benchmark, protocol, splits, --data, --images, --dataset) to a Task.

Each benchmark builds its own task (`BenchmarkSpec.build`, in its task module); other image sets
than COCO (the toy world) register a dataset builder through a plugin.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from halluc.benchmarks import sources
from halluc.benchmarks.paths import data_home
from halluc.benchmarks.spec import benchmark_names, benchmark_spec
from halluc.benchmarks.task import Task
from halluc.errors import HallucError, unknown_choice
from halluc.registry import Registry

__all__ = ["build_task", "data_home", "datasets", "register_dataset"]


class DatasetBuilder(Protocol):
    """Builds a benchmark's task on a dataset other than COCO: (benchmark, protocol, splits, max_new_tokens) -> Task."""

    def __call__(self, benchmark: str, protocol: str | None, splits: list[str] | None,
                 max_new_tokens: int | None) -> Task: ...


def _not_coco(name: str, builder: DatasetBuilder) -> None:
    if name == "coco":
        raise ValueError("dataset 'coco' is already registered")


# image sets other than COCO (the benchmarks' own files); plugins register theirs (the toy world)
DATASETS: Registry[DatasetBuilder] = Registry("dataset", check=_not_coco)


def register_dataset(name: str, builder: DatasetBuilder) -> None:
    """Add an image set benchmarks can run on (`--dataset NAME`)."""
    DATASETS.register(name, builder)


def datasets() -> list[str]:
    return ["coco", *DATASETS.names()]


SOURCE_CHOICES = ("auto", "local", "hf")


def build_task(benchmark: str, *, protocol: str | None = None, splits: list[str] | None = None,
               data: Path | None = None, images: Path | None = None, max_new_tokens: int | None = None,
               dataset: str = "coco", source: str = "auto") -> Task:
    """`source`: `local` (files: --data, --images), `hf` (the benchmark's HF dataset, `--data` naming a
    saved copy or ID@REVISION), or `auto`: local when --images is given or the benchmark has no HF
    dataset, else hf."""
    if dataset not in datasets():
        raise unknown_choice("dataset", dataset, datasets())
    if source not in SOURCE_CHOICES:
        raise unknown_choice("source", source, SOURCE_CHOICES)
    if dataset != "coco":
        return DATASETS.get(dataset)(benchmark, protocol, splits, max_new_tokens)
    if benchmark not in benchmark_names():
        raise unknown_choice("benchmark", benchmark, benchmark_names())
    build = benchmark_spec(benchmark).build
    if source == "hf" or (source == "auto" and images is None and sources.has_source(benchmark)):
        if images is not None:
            raise HallucError("--source hf reads images from the dataset; drop --images (or use --source local)")
        files = sources.materialize(benchmark, data)
        task = build(protocol=protocol, splits=splits, data=files.data, images=files.images,
                     max_new_tokens=max_new_tokens)
        task.data_source = files.provenance
        return task
    return build(protocol=protocol, splits=splits, data=data, images=images, max_new_tokens=max_new_tokens)
