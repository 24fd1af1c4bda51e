"""The benchmark contract, like the method contract: every registered benchmark's spec is complete, its
`halluc score` command scores a tiny fixture (the same through the API, the CLI and JSON), and its task's rows
round-trip through results.json into a report. A new benchmark adds its folder, an example below, and its
own tests (docs/adding-a-benchmark.md); until it has an example, this module fails for it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import halluc.api as api
from halluc.benchmarks.build import build_task
from halluc.benchmarks.spec import benchmark_names, benchmark_spec
from halluc.cli.score import score_app
from halluc.evaluation.store import write_json_atomic
from halluc.reports.leaderboard import leaderboards
from halluc.reports.model import build_report, load_run
from halluc.safe_paths import relative_parts

SHA256 = re.compile(r"[0-9a-f]{64}")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _image(path: Path, colour=(10, 120, 200)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)


# ---------------------------------------------------------------- one tiny example per benchmark

def _pope(root: Path) -> dict:
    questions = [{"question_id": i + 1, "image": "COCO_val2014_000000000001.jpg", "text": f"Is there a {o} in the "
                  "image?", "label": label} for i, (o, label) in enumerate([("dog", "yes"), ("cat", "no")] * 2)]
    for split in ("random", "popular", "adversarial"):
        _jsonl(root / "pope" / f"coco_pope_{split}.json", questions)
    _image(root / "images" / "COCO_val2014_000000000001.jpg")
    answers = _jsonl(root / "answers.jsonl", [{"question_id": q["question_id"], "text": "Yes"} for q in questions])
    return {"score": {"questions": root / "pope" / "coco_pope_random.json", "answers": answers},
            "task": {"data": root / "pope", "images": root / "images", "source": "local"}}


def _chair(root: Path) -> dict:
    (root / "chair").mkdir(parents=True)
    (root / "chair" / "gt_objects.json").write_text(json.dumps({"1": ["dog"], "2": ["cat", "car"]}))
    _jsonl(root / "chair" / "image_ids.jsonl", [{"image_id": 1}, {"image_id": 2}])
    for i in (1, 2):
        _image(root / "images" / f"COCO_val2014_{i:012d}.jpg")
    captions = _jsonl(root / "captions.jsonl", [{"image_id": 1, "caption": "A dog and a cat."},
                                                {"image_id": 2, "caption": "A car."}])
    return {"score": {"captions": captions, "gt": root / "chair" / "gt_objects.json"},
            "task": {"data": root / "chair", "images": root / "images"}}


def _mme(root: Path) -> dict:
    release = root / "release" / "existence"
    release.mkdir(parents=True)
    _image(release / "000.png")
    (release / "000.txt").write_text("Is there a dog? Please answer yes or no.\tYes\n"
                                     "Is there a cat? Please answer yes or no.\tNo\n")
    results = root / "results"
    results.mkdir()
    (results / "existence.txt").write_text("000.png\tIs there a dog?\tYes\tYes\n000.png\tIs there a cat?\tNo\tYes\n")
    return {"score": {"results_dir": results},
            "task": {"images": root / "release", "splits": ["existence"]}}


def _amber(root: Path) -> dict:
    data = root / "amber"
    annotations = [{"id": 1, "type": "generative", "truth": ["dog", "grass"], "hallu": ["cat"]},
                   {"id": 2, "type": "discriminative-hallucination", "truth": "yes"}]
    queries = [{"id": 1, "image": "AMBER_1.jpg", "query": "Describe this image."},
               {"id": 2, "image": "AMBER_2.jpg", "query": "Is there a dog in this image?"}]
    (data / "query").mkdir(parents=True)
    (data / "annotations.json").write_text(json.dumps(annotations))
    (data / "relation.json").write_text(json.dumps({"dog": [], "cat": [], "grass": []}))
    (data / "safe_words.txt").write_text("light\n")
    (data / "query" / "query_all.json").write_text(json.dumps(queries))
    for k in (1, 2):
        _image(root / "images" / f"AMBER_{k}.jpg")
    answers = root / "answers.json"
    answers.write_text(json.dumps([{"id": 1, "response": "A dog on the grass."}, {"id": 2, "response": "Yes"}]))
    return {"score": {"answers": answers, "data": data, "extractor": "offline"},
            "task": {"data": data, "images": root / "images"}}


def _hallusionbench(root: Path) -> dict:
    rows = [{"category": "VD", "subcategory": "illusion", "visual_input": "1", "set_id": "0", "figure_id": "0",
             "sample_note": "circle", "question_id": str(q), "question": f"Is circle {q} larger?",
             "gt_answer_details": "", "gt_answer": gt, "filename": "./VD/illusion/0_0.png"}
            for q, gt in ((0, "1"), (1, "0"))]
    folder = root / "hb"
    folder.mkdir()
    (folder / "HallusionBench.json").write_text(json.dumps(rows))
    _image(folder / "VD" / "illusion" / "0_0.png")
    answers = root / "result.json"
    answers.write_text(json.dumps([{**r, "model_prediction": "Yes"} for r in rows]))
    return {"score": {"answers": answers, "questions": folder / "HallusionBench.json"},
            "task": {"data": folder, "images": folder}}


EXAMPLES = {"pope": _pope, "chair": _chair, "mme": _mme, "amber": _amber, "hallusionbench": _hallusionbench}
SCORED_BY_ANOTHER = {"repope": "pope"}  # `halluc score pope --labels repope`; its task comes from POPE runs


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HALLUC_DATA", str(tmp_path / "home"))


# ---------------------------------------------------------------- the spec is complete

@pytest.mark.parametrize("name", benchmark_names())
def test_spec_is_complete(name):
    spec = benchmark_spec(name)
    assert spec.name == name and spec.title and callable(spec.build)
    assert spec.headline in spec.keys() and spec.metric(spec.headline).better in ("higher", "lower")
    assert len({m.key for m in spec.metrics}) == len(spec.metrics)
    assert all(m.better in ("higher", "lower", None) for m in spec.metrics)
    for remote in spec.data.remotes:
        assert remote.url.startswith(("https://", "http://images.cocodataset.org/"))
        relative_parts(remote.target, "target")  # a plain relative path under the data home
        assert remote.target.split("/")[0] == name and (remote.sha256 is None or SHA256.fullmatch(remote.sha256))
    assert spec.data.images or not spec.data.remotes, "a benchmark with files says where its images come from"
    if spec.data.hf is not None:
        assert re.fullmatch(r"[0-9a-f]{40}", spec.data.hf.revision) and spec.data.hf.splits
        assert callable(spec.data.hf.plan) and callable(spec.data.hf.layout)
    if spec.score is None:
        assert SCORED_BY_ANOTHER.get(name) == spec.corrects, f"{name} has no `halluc score` command"
    else:
        assert spec.score.summary and set(spec.score.help) == set(spec.score.run.__code__.co_varnames[
            :spec.score.run.__code__.co_argcount]), "every option of the score command has its help line"


def test_every_benchmark_has_an_example():
    assert set(EXAMPLES) == set(api.score_commands()) and set(EXAMPLES) | set(SCORED_BY_ANOTHER) == \
        set(benchmark_names())


# ---------------------------------------------------------------- scoring saved outputs

@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_score_is_the_same_through_api_cli_and_json(name, tmp_path, home):
    files = EXAMPLES[name](tmp_path)["score"]
    result = api.score(name, **files)
    assert json.loads(json.dumps(result)) == result
    assert _contains_key(result, benchmark_spec(name).headline)
    flags = [arg for key, value in files.items() for arg in ("--" + key.replace("_", "-"), str(value))]
    cli = CliRunner().invoke(score_app, [name, *flags, "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout) == result
    table = CliRunner().invoke(score_app, [name, *flags])
    assert table.exit_code == 0 and table.stdout.strip(), table.output


def _contains_key(result, key: str) -> bool:
    if isinstance(result, dict):
        return key in result or any(_contains_key(v, key) for v in result.values())
    return False


# ---------------------------------------------------------------- the task's rows through results.json

@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_task_rows_round_trip_through_results_json(name, tmp_path, home):
    task = build_task(name, **EXAMPLES[name](tmp_path)["task"])
    spec = benchmark_spec(name)
    rows = []
    for split in task.splits():
        samples = task.samples(split)
        assert samples and len({s.id for s in samples}) == len(samples)
        assert all(Path(s.image).is_file() for s in samples)
        metrics = task.score(split, samples, {s.id: "Yes" for s in samples})
        numbers = {k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert numbers <= set(spec.keys()), "every number a task reports is a metric of its spec"
        rows.append({"model": "m", "revision": "r", "method": "none", "params": {}, "benchmark": name,
                     "split": split, "protocol": task.protocol.name, "task_version": task.version, "seed": 0,
                     "limit": None, **metrics})
    rows += spec.summary_rows(rows)
    assert any(spec.headline in r for r in rows)  # in every split, or in the summary row (AMBER's overall)
    write_json_atomic(tmp_path / "run" / "results.json", {"config": {}, "rows": rows})
    run = load_run(tmp_path / "run")
    assert run.rows == json.loads(json.dumps(rows))
    boards = [b for b in leaderboards(build_report([run])) if b.benchmark == name]
    assert boards and all(b.rows for b in boards)
