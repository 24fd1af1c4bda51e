"""Benchmarks as tasks a run can execute: samples in, official metrics out.

A task turns benchmark files into `Sample`s (id, image, prompt), and scores generated texts in two
steps, `units` (one scoring unit per sample or image, computed once) and `aggregate` (the official
metric over a list of units). Scoring a run is `aggregate(units(...))`; the report's paired bootstrap
re-aggregates resampled units, so confidence intervals use exactly the official arithmetic.

Each benchmark's task module (`pope.py`, `chair.py`, `mme.py` here) also registers its
`BenchmarkSpec` (`halluc.benchmarks.spec`): metrics, headline, summary rows, and how to build the
task from command-line words.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halluc.errors import HallucError


@dataclass(frozen=True)
class Sample:
    id: str  # unique within its task and split
    image: Path
    prompt: str
    target: Any = None  # what scoring needs: a POPE question, a CHAIR image id, an MME item


@dataclass(frozen=True)
class Protocol:
    """A published way of running a benchmark; recorded with every result."""

    name: str
    decoding: Mapping[str, Any]  # halluc.Decoding fields
    notes: str = ""


@dataclass
class Task:
    """Base: subclasses fill `samples`, `units` and `aggregate`."""

    name: str = ""
    version: str = "1"
    protocol: Protocol = field(default_factory=lambda: Protocol("default", {}))
    # set by build_task for --source hf: {"source", "dataset", "revision", "config"}
    data_source: dict[str, Any] | None = None

    def splits(self) -> list[str]:
        raise NotImplementedError

    def samples(self, split: str) -> list[Sample]:
        raise NotImplementedError

    def units(self, split: str, samples: Sequence[Sample], texts: Mapping[str, str | None]) -> list:
        raise NotImplementedError

    def aggregate(self, split: str, units: Sequence) -> dict[str, float]:
        raise NotImplementedError

    def score(self, split: str, samples: Sequence[Sample], texts: Mapping[str, str | None]) -> dict[str, float]:
        return self.aggregate(split, self.units(split, samples, texts))

    def data_files(self) -> dict[str, Path]:
        """{name: path} of every question and label file the task reads (hashed into the run's identity)."""
        return {}

    def question_set(self) -> str | None:
        """Which published question set the files are, when the benchmark has several (POPE); else None."""
        return None

    # ---- the gain analysis (`halluc.evaluation.gain`): which splits are yes/no questions or captions
    def yes_no_splits(self) -> list[str]:
        """Splits of yes/no questions: their sample lines record the yes/no evidence (default: none)."""
        return []

    def yes_no(self, split: str, samples: Sequence[Sample], texts: Mapping[str, str | None]) -> list[tuple]:
        """(answer, truth) per sample of a yes/no split: answer True (yes), False (no) or None (unanswered or
        unparsed, read with the protocol's own parser); truth True when the right answer is yes."""
        raise NotImplementedError

    def caption_splits(self) -> list[str]:
        """Splits of captions scored by the objects they name (default: none)."""
        return []

    def caption_objects(self, split: str, samples: Sequence[Sample], texts: Mapping[str, str | None]) -> list[tuple]:
        """(hallucinated, true) objects per caption, each a `collections.Counter` of object names."""
        raise NotImplementedError

    def describe(self) -> dict:
        described = {"benchmark": self.name, "task_version": self.version, "protocol": self.protocol.name,
                     "decoding": dict(self.protocol.decoding)}
        if self.data_source:
            described["data_source"] = dict(self.data_source)
        return described


def check_images(samples: Sequence[Sample], images_dir: Path) -> None:
    """Name missing images before any generation starts."""
    missing = sorted({s.image.name for s in samples if not s.image.exists()})
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise HallucError(f"{len(missing)} images missing from {images_dir}: {shown}")
