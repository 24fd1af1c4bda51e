"""RePOPE (Neuhaus & Hein, 2025) as POPE's twin: the same generated answers scored against corrected labels.

RePOPE relabels the 3,000-question COCO POPE files (9.3% of the "yes" and 1.7% of the "no" labels were
wrong) and removes ambiguous questions. A POPE run on those files gains one RePOPE row per split that
has a matching RePOPE file (`halluc data fetch repope`), with `removed` counting the dropped questions;
nothing is generated twice. The report ranks models on both (`corrects="pope"`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from halluc.benchmarks.pope import scoring as pope
from halluc.benchmarks.pope.task import PopeTask, mean_row
from halluc.benchmarks.repope.data import DATA
from halluc.benchmarks.spec import BenchmarkSpec, Metric, register_benchmark
from halluc.benchmarks.task import Sample, Task
from halluc.errors import HallucError


@dataclass
class RepopeTask(Task):
    """A POPE task's samples that RePOPE keeps, with RePOPE's labels; scored with POPE's parser."""

    base: PopeTask = field(default_factory=PopeTask)
    label_files: dict[str, Path] = field(default_factory=dict)  # split -> coco_repope_{split}.json

    def __post_init__(self):
        self.name, self.version = "repope", "1"
        self.protocol = self.base.protocol

    def splits(self) -> list[str]:
        return [s for s in self.base.splits() if s in self.label_files]

    def samples(self, split: str) -> list[Sample]:
        originals = self.base.samples(split)
        relabelled = pope.read_pope_questions(self.label_files[split], split)
        kept, _ = pope.relabel([s.target for s in originals], relabelled,
                               (str(self.base.data_dir), str(self.label_files[split])))
        by_id = {str(q.question_id): q for q in kept}
        return [replace(s, target=by_id[s.id]) for s in originals if s.id in by_id]

    def units(self, split, samples, texts):
        return self.base.units(split, samples, texts)

    def aggregate(self, split, units):
        return self.base.aggregate(split, units)

    def data_files(self) -> dict[str, Path]:
        return {Path(path).name: Path(path) for path in self.label_files.values()}
    def yes_no_splits(self) -> list[str]:
        return self.splits()

    def yes_no(self, split, samples, texts):
        return self.base.yes_no(split, samples, texts)

    def describe(self) -> dict:
        return {**self.base.describe(), "benchmark": self.name,
                "labels": {split: str(path) for split, path in self.label_files.items()}}


def repope_twin(task: PopeTask) -> RepopeTask | None:
    """The RePOPE twin of a POPE task: splits whose RePOPE file relabels exactly the task's questions.

    A split without a file, or whose POPE questions are another version (the 2,910 files, the toy
    world), simply has no twin: RePOPE is only defined on the 3,000-question COCO files.
    """
    files = {}
    for split in task.splits():
        found = next((Path(d) / pope.REPOPE_TEMPLATE.format(split) for d in task.relabel_dirs
                      if (Path(d) / pope.REPOPE_TEMPLATE.format(split)).is_file()), None)
        if found is None:
            continue
        try:
            pope.relabel([s.target for s in task.samples(split)], pope.read_pope_questions(found, split))
        except HallucError:
            continue
        files[split] = found
    return RepopeTask(base=task, label_files=files) if files else None


def build(protocol: str | None = None, splits: list[str] | None = None, data: Path | None = None,
          images: Path | None = None, max_new_tokens: int | None = None) -> RepopeTask:
    raise HallucError("RePOPE is scored from POPE runs: `halluc run --benchmark pope` on the 3,000-question files "
                      "(protocol vcd, or --data with them) adds RePOPE rows when `halluc data fetch repope` was run; "
                      "`halluc score pope --labels repope` scores saved answers")


def complete_mean_row(rows: list[dict]) -> list[dict]:
    """The mean over the three splits, only when all three have a RePOPE row (a mean of two would not
    be comparable with POPE's)."""
    by_method: dict[str, list[dict]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    complete = [r for group in by_method.values() if {g["split"] for g in group} >= set(pope.SPLITS) for r in group]
    return [{**row, "removed": sum(r["removed"] for r in complete if r["method"] == row["method"])}
            for row in mean_row(complete)]


SPEC = register_benchmark(BenchmarkSpec(
    name="repope", data=DATA, title="RePOPE", headline="f1", build=build, summary_rows=complete_mean_row,
    summary_split="mean", corrects="pope", companion=repope_twin, compact=("yes_ratio",),
    metrics=(Metric("f1", "RePOPE F1", "higher"), Metric("accuracy", "RePOPE accuracy", "higher"),
             Metric("precision", "RePOPE precision", "higher"),
             Metric("recall", "RePOPE recall", "higher", description="share of present objects answered yes"),
             Metric("yes_ratio", "RePOPE yes ratio", None, description="share of yes answers (50 = balanced)",
                    reference=50.0),
             Metric("unparsed", "RePOPE unparsed", "lower", unit=""),
             Metric("removed", "removed", None, unit="", description="POPE questions RePOPE dropped as ambiguous"),
             Metric("n", "n", None, unit=""))))
