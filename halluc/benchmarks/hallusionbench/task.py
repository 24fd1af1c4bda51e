"""HallusionBench as a task: the questions with a figure in, the official aAcc / fAcc / qAcc out.

One split, `image`: the 951 questions asked on a figure (the name of the HF mirror's split). The 178
visual-supplement questions asked with no figure need text-only generation, which the method stack
does not run (every method acts on an image), so runs leave them out, as lmms-eval's and VLMEvalKit's
image tasks do; `halluc score hallusionbench` scores them when a result file has them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from halluc.benchmarks.hallusionbench import scoring as hb
from halluc.benchmarks.hallusionbench.command import COMMAND
from halluc.benchmarks.hallusionbench.data import DATA
from halluc.benchmarks.paths import data_home, need_images
from halluc.benchmarks.spec import BenchmarkSpec, Metric, register_benchmark
from halluc.benchmarks.task import Protocol, Sample, Task
from halluc.errors import HallucError, unknown_choice
from halluc.safe_paths import confined

QUESTION_FILE = "HallusionBench.json"
# protocol -> (prompt suffix, decoding); answers are read with VLMEvalKit's yes/no rule, no GPT judge
PROTOCOLS = {
    "vlmevalkit": ("", {"do_sample": False, "max_new_tokens": 128}),
}


@dataclass
class HallusionBenchTask(Task):
    """HallusionBench from the official question file and image folder (`VD/...`, `VS/...`)."""

    question_file: Path = Path(QUESTION_FILE)
    images_dir: Path = Path(".")
    preset: str = "vlmevalkit"
    max_new_tokens: int | None = None

    def __post_init__(self):
        self.name, self.version = "hallusionbench", "1"
        if self.preset not in PROTOCOLS:
            raise unknown_choice("HallusionBench protocol", self.preset, PROTOCOLS)
        suffix, decoding = PROTOCOLS[self.preset]
        self.suffix = suffix
        decoding = {**decoding, **({"max_new_tokens": self.max_new_tokens} if self.max_new_tokens else {})}
        self.protocol = Protocol(self.preset, decoding, "question as released; greedy; VLMEvalKit yes/no extraction, "
                                 "no GPT judge; official aAcc/fAcc/qAcc")
        self._questions = None

    def splits(self) -> list[str]:
        return ["image"]

    def questions(self) -> list[hb.HBQuestion]:
        if self._questions is None:
            if not Path(self.question_file).is_file():
                raise HallucError(f"HallusionBench question file missing: {self.question_file} "
                                  "(run `halluc data fetch hallusionbench` or pass --data DIR)")
            self._questions = hb.read_questions(self.question_file)
        return self._questions

    def data_files(self) -> dict[str, Path]:
        return {Path(self.question_file).name: Path(self.question_file)}

    def samples(self, split: str) -> list[Sample]:
        if split != "image":
            raise unknown_choice("HallusionBench split", split, ["image"])
        return [Sample(q.key, confined(self.images_dir, q.filename, f"HallusionBench {q.key} filename"),
                       q.question + self.suffix, q)
                for q in self.questions() if q.has_figure and q.filename]

    def units(self, split, samples, texts):
        return hb.units(hb.judge([s.target for s in samples], {s.id: texts.get(s.id) for s in samples}))

    def yes_no_splits(self) -> list[str]:
        return self.splits()

    def yes_no(self, split, samples, texts):
        return [(hb.parse_word(texts[s.id]) if texts.get(s.id) is not None else None, s.target.answer)
                for s in samples]

    def aggregate(self, split, units):
        return {**hb.aggregate(units), "unclear": sum(j.verdict == 2 for unit in units for j in unit)}


def build(protocol: str | None = None, splits: list[str] | None = None, data: Path | None = None,
          images: Path | None = None, max_new_tokens: int | None = None) -> HallusionBenchTask:
    folder = Path(data) if data else data_home() / "hallusionbench"
    question_file = folder if folder.is_file() else folder / QUESTION_FILE
    for split in splits or []:
        if split != "image":
            raise unknown_choice("HallusionBench split", split, ["image"])
    return HallusionBenchTask(question_file=question_file,
                              images_dir=need_images(images, "hallusionbench", "HallusionBench (VD/, VS/)"),
                              preset=protocol or "vlmevalkit", max_new_tokens=max_new_tokens)


SPEC = register_benchmark(BenchmarkSpec(
    name="hallusionbench", data=DATA, score=COMMAND, title="HallusionBench", headline="qacc", build=build,
    metrics=(Metric("qacc", "HallusionBench qAcc", "higher", description="question pairs right on every figure"),
             Metric("facc", "HallusionBench fAcc", "higher", description="figures with every question right"),
             Metric("aacc", "HallusionBench aAcc", "higher", description="questions right"),
             Metric("easy_aacc", "HallusionBench easy aAcc", "higher",
                    description="official name: question pairs right, original figures"),
             Metric("hard_aacc", "HallusionBench hard aAcc", "higher",
                    description="official name: question pairs right, edited figures"),
             *(Metric(f"{c.lower()}_{k}", f"HallusionBench {c} {label}", "higher")
               for c in ("VD", "VS") for k, label in (("qacc", "qAcc"), ("facc", "fAcc"), ("aacc", "aAcc"))),
             Metric("unclear", "HallusionBench unclear", "lower", unit="",
                    description="answers with neither yes nor no (counted wrong, except VS without a figure)"),
             Metric("n", "n", None, unit=""))))
