"""AMBER as a task: both parts, every metric of the official evaluator, and the AMBER Score.

Splits: `generative` (1,004 descriptions) and `discriminative` (14,216 yes/no questions, with the
existence / attribute (state, number, action) / relation breakdown in the same row). A summary row
`overall` carries the AMBER Score once both ran. Every row records the noun extractor that ran
(`extractor`: official or offline, see `halluc.benchmarks.amber.scoring`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from halluc.benchmarks.amber import scoring as amber
from halluc.benchmarks.amber.command import COMMAND
from halluc.benchmarks.amber.data import DATA
from halluc.benchmarks.paths import data_home, need_images
from halluc.benchmarks.pope.scoring import parse_word
from halluc.benchmarks.spec import BenchmarkSpec, Metric, register_benchmark
from halluc.benchmarks.task import Protocol, Sample, Task
from halluc.errors import HallucError, unknown_choice
from halluc.safe_paths import confined

SPLITS = ("generative", "discriminative")
LLAVA_SUFFIX = "\nAnswer the question using a single word or phrase."
# protocol -> (suffix for yes/no questions, how yes/no answers are read: None = exactly "Yes"/"No")
PROTOCOLS = {"llava": (LLAVA_SUFFIX, parse_word), "official": ("", None)}
DECODING = {"do_sample": False, "max_new_tokens": 512}


@dataclass
class AmberTask(Task):
    """AMBER from the official data folder (annotations, relation, safe words, queries) and its images."""

    data_dir: Path = Path(".")
    images_dir: Path = Path(".")
    chosen_splits: tuple[str, ...] = SPLITS
    preset: str = "llava"
    extractor_kind: str = "auto"
    max_new_tokens: int | None = None

    def __post_init__(self):
        self.name, self.version = "amber", "1"
        if self.preset not in PROTOCOLS:
            raise unknown_choice("AMBER protocol", self.preset, PROTOCOLS)
        for split in self.chosen_splits:
            if split not in SPLITS:
                raise unknown_choice("AMBER split", split, SPLITS)
        self.suffix, self.parser = PROTOCOLS[self.preset]
        decoding = {**DECODING, **({"max_new_tokens": self.max_new_tokens} if self.max_new_tokens else {})}
        reading = "VLMEvalKit yes/no extraction" if self.parser else "exactly 'Yes'/'No'"
        self.protocol = Protocol(self.preset, decoding, f"descriptions: 'Describe this image.'; yes/no: query"
                                 f"{' + LLaVA suffix' if self.suffix else ''}, read as {reading}; greedy")
        self._data = self._extractor = None

    def data(self) -> amber.AmberData:
        if self._data is None:
            if not (Path(self.data_dir) / "annotations.json").is_file():
                raise HallucError(f"AMBER files missing in {self.data_dir} (annotations.json, relation.json, "
                                  "safe_words.txt, query/): run `halluc data fetch amber` or pass --data DIR")
            self._data = amber.load_amber(self.data_dir)
        return self._data

    def extractor(self) -> amber.Extractor:
        if self._extractor is None:
            self._extractor = amber.get_extractor(self.extractor_kind, self.data())
        return self._extractor

    def splits(self) -> list[str]:
        return list(self.chosen_splits)

    def samples(self, split: str) -> list[Sample]:
        data = self.data()
        generative = split == "generative"
        return [Sample(str(i), confined(self.images_dir, image, f"AMBER query {i} image"),
                       query if generative else query + self.suffix, i)
                for i, (image, query) in sorted(data.queries.items())
                if (data.annotations[i]["type"] == "generative") == generative]

    def units(self, split, samples, texts):
        data = self.data()
        if split == "generative":
            return [amber.check_description(texts.get(s.id) or "", data.annotations[s.target], data, self.extractor())
                    for s in samples]
        return [amber.check_answer(texts.get(s.id), data.annotations[s.target], self.parser) for s in samples]

    def aggregate(self, split, units):
        if split == "generative":
            return {**amber.generative_metrics(units), "extractor": self.extractor().name}
        return {**amber.discriminative_metrics(units), "extractor": self.extractor().name}

    def data_files(self) -> dict[str, Path]:
        names = ("annotations.json", "relation.json", "safe_words.txt", "query/query_all.json")
        return {name: Path(self.data_dir) / name for name in names if (Path(self.data_dir) / name).is_file()}
    def yes_no_splits(self) -> list[str]:
        return [s for s in self.splits() if s == "discriminative"]

    def yes_no(self, split, samples, texts):
        return [(None if u.said is None else u.said == "Yes", not u.truth_no)
                for u in self.units(split, samples, texts)]

    def caption_splits(self) -> list[str]:
        return [s for s in self.splits() if s == "generative"]

    def caption_objects(self, split, samples, texts):
        """The official evaluator counts objects without naming them: one count each."""
        return [(Counter(objects=u.hallucinated), Counter(objects=u.covered))
                for u in self.units(split, samples, texts)]

    def describe(self) -> dict:
        return {**super().describe(), "extractor": self.extractor_kind}


def build(protocol: str | None = None, splits: list[str] | None = None, data: Path | None = None,
          images: Path | None = None, max_new_tokens: int | None = None) -> AmberTask:
    return AmberTask(data_dir=Path(data) if data else data_home() / "amber",
                     images_dir=need_images(images, "amber", "AMBER (AMBER_1.jpg ... AMBER_1004.jpg)"),
                     chosen_splits=tuple(splits or SPLITS), preset=protocol or "llava", max_new_tokens=max_new_tokens)


def overall_rows(rows: list[dict]) -> list[dict]:
    """The AMBER Score row per method, when both parts ran."""
    out = []
    by_method: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_method.setdefault(row["method"], {})[row["split"]] = row
    for parts in by_method.values():
        if set(SPLITS) <= set(parts):
            generative, discriminative = parts["generative"], parts["discriminative"]
            out.append({**discriminative, "split": "overall",
                        "amber_score": amber.amber_score(generative["chair"], discriminative["f1"]),
                        "chair": generative["chair"], "cover": generative["cover"], "hal": generative["hal"],
                        "cog": generative["cog"], "n": generative["n"] + discriminative["n"]})
    return out


_DIMENSION_METRICS = tuple(
    Metric(f"{part}_{key}", f"AMBER {part} {label}", "higher")
    for part in ("existence", "attribute", "state", "number", "action", "relation")
    for key, label in (("accuracy", "accuracy"), ("precision", "precision"), ("recall", "recall"), ("f1", "F1")))

SPEC = register_benchmark(BenchmarkSpec(
    name="amber", data=DATA, score=COMMAND, title="AMBER", headline="amber_score", build=build,
    summary_rows=overall_rows,
    summary_split="overall", compact=("chair", "hal", "f1"), tradeoff=("cover", "chair"),
    metrics=(Metric("amber_score", "AMBER Score", "higher", description="(100 - CHAIR + F1) / 2"),
             Metric("chair", "AMBER CHAIR", "lower", description="hallucinated nouns / nouns in descriptions"),
             Metric("cover", "AMBER Cover", "higher", description="annotated objects mentioned"),
             Metric("hal", "AMBER Hal", "lower", description="descriptions with a hallucinated noun"),
             Metric("cog", "AMBER Cog", "lower", description="hallucination-prone objects mentioned"),
             Metric("f1", "AMBER F1", "higher", description="yes/no part, 'no' as the positive class"),
             Metric("accuracy", "AMBER accuracy", "higher"), Metric("precision", "AMBER precision", "higher"),
             Metric("recall", "AMBER recall", "higher"), *_DIMENSION_METRICS,
             Metric("unparsed", "AMBER unparsed", "lower", unit="", description="answers neither Yes nor No"),
             Metric("n", "n", None, unit=""))))
