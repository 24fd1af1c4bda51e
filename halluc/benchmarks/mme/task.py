"""MME as a task: the official release in, acc / acc+ / score per subtask and the group totals out."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from halluc.benchmarks.mme import scoring as mme
from halluc.benchmarks.mme.command import COMMAND
from halluc.benchmarks.mme.data import DATA
from halluc.benchmarks.spec import BenchmarkSpec, Metric, register_benchmark
from halluc.benchmarks.task import Protocol, Sample, Task
from halluc.errors import HallucError, unknown_choice


@dataclass
class MMETask(Task):
    """MME from the official image release at `release_dir`, one split per subtask."""

    release_dir: Path = Path(".")
    subtasks: tuple[str, ...] = mme.SUBTASKS
    prompt_variant: str = "llava"  # "llava" (LLaVA's suffix) or "official" (question as released)

    def __post_init__(self):
        self.name, self.version = "mme", "1"
        if self.prompt_variant not in ("llava", "official"):
            raise unknown_choice("MME prompt variant", self.prompt_variant, ("llava", "official"))
        for sub in self.subtasks:
            if sub not in mme.SUBTASKS:
                raise unknown_choice("MME subtask", sub, mme.SUBTASKS)
        self.protocol = Protocol(self.prompt_variant, {"do_sample": False, "max_new_tokens": 128},
                                 "greedy; answers parsed with the eval tool's parse_pred_ans")
        self._items = None

    def splits(self) -> list[str]:
        return list(self.subtasks)

    def samples(self, split: str) -> list[Sample]:
        if self._items is None:
            self._items = mme.read_mme_release(self.release_dir, self.subtasks)
        prompt = mme.llava_prompt if self.prompt_variant == "llava" else (lambda q: q)
        return [Sample(f"{item.image}|{item.question}", Path(item.image_path), prompt(item.question), item)
                for item in self._items if item.subtask == split]

    def data_files(self) -> dict[str, Path]:
        """Every subtask's question files (`question<TAB>answer` lines), in either release layout."""
        root = Path(self.release_dir)
        return {str(p.relative_to(root)): p for sub in self.subtasks for p in sorted((root / sub).rglob("*.txt"))}

    def units(self, split, samples, texts):
        by_image: dict[str, list] = {}
        for s in samples:
            item = s.target
            response = texts.get(s.id) or ""
            by_image.setdefault(item.image, []).append(
                mme.MMEItem(item.subtask, item.image, item.question, item.answer, response.replace("\n", " ")))
        return list(by_image.values())  # one unit per image: acc+ needs both of its questions

    def yes_no_splits(self) -> list[str]:
        return self.splits()

    def yes_no(self, split, samples, texts):
        return [(mme.parse_mme(texts[s.id] or "") if texts.get(s.id) is not None else None, s.target.answer)
                for s in samples]

    def aggregate(self, split, units):
        items = [item for unit in units for item in unit]
        return {**mme.score_mme_subtask(items).as_dict(), "n": len(items)}


def build(protocol: str | None = None, splits: list[str] | None = None, data: Path | None = None,
          images: Path | None = None, max_new_tokens: int | None = None) -> MMETask:
    root = images or data
    if root is None:
        raise HallucError("mme needs --images DIR: the MME_Benchmark_release_version folder (images and questions)")
    return MMETask(release_dir=Path(root), subtasks=tuple(splits or mme.SUBTASKS), prompt_variant=protocol or "llava")


def total_rows(rows: list[dict]) -> list[dict]:
    """Perception, cognition and hallucination totals (sums of subtask scores), per method, only when
    every subtask of the group was run."""
    by_method: dict[str, list[dict]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    out = []
    for group in by_method.values():
        scores = {r["split"]: r["score"] for r in group}
        for total, members in (("perception", mme.PERCEPTION), ("cognition", mme.COGNITION),
                               ("hallucination", mme.HALLUCINATION)):
            if all(m in scores for m in members):
                out.append({**group[0], "split": total, "acc": None, "acc_plus": None,
                            "score": sum(scores[m] for m in members),
                            "n": sum(r["n"] for r in group if r["split"] in members)})
    return out


SPEC = register_benchmark(BenchmarkSpec(
    name="mme", data=DATA, score=COMMAND, title="MME", headline="score", build=build, summary_rows=total_rows,
    summary_split="perception",
    metrics=(Metric("score", "MME score", "higher", unit="", description="100·acc + 100·acc+ per subtask"),
             Metric("acc", "MME acc", "higher"), Metric("acc_plus", "MME acc+", "higher"),
             Metric("n", "n", None, unit=""))))
