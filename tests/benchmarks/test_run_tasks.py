"""CHAIR and MME runs on tiny models, and the report rendered from runs (deltas, bootstrap, HTML)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import halluc
from halluc.cli import app
from halluc.engine.views import ORIGINAL, Branch
from halluc.evaluation.intervals import paired_intervals
from halluc.evaluation.run import RunOptions
from halluc.interventions import Method, param, register
from halluc.interventions.registry import unregister
from halluc.world import WorldConfig, generate_world


@dataclass(frozen=True)
class TextPrior(Method):
    """Test decoding method for reports: subtract the text-only prior."""

    name = "test-textprior"
    kind = "decoding"
    alpha: float = param(1.0, low=0.0)

    def branches(self, session):
        return [Branch("text", with_image=False)]

    def combine(self, views):
        return (1 + self.alpha) * views[ORIGINAL] - self.alpha * views["text"]


@pytest.fixture(scope="module", autouse=True)
def test_method():
    register(TextPrior)
    yield
    unregister(TextPrior.name)


@pytest.fixture(scope="module")
def chair_world(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("chair_world")
    files = generate_world(root / "world", WorldConfig(image_size=64, seed=2), n_images=4, split="val")
    data = json.loads(files.instances.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    gt = {str(i["id"]): sorted({names[a["category_id"]] for a in data["annotations"] if a["image_id"] == i["id"]})
          for i in data["images"]}
    chair_dir = root / "chair"
    chair_dir.mkdir()
    (chair_dir / "gt_objects.json").write_text(json.dumps(gt))
    ids = "".join(json.dumps({"image_id": i["id"]}) + "\n" for i in data["images"])
    (chair_dir / "image_ids.jsonl").write_text(ids)
    # COCO file names for the CHAIR task's default pattern
    for i in data["images"]:
        Image.open(files.images / i["file_name"]).save(files.images / f"COCO_val2014_{i['id']:012d}.jpg")
    return chair_dir, files.images


@pytest.fixture(scope="module")
def mme_release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mme")
    for subtask in ("existence", "count"):
        folder = root / subtask
        folder.mkdir()
        for k in range(2):
            Image.new("RGB", (32, 32), (40 * k, 90, 200)).save(folder / f"{k:03d}.jpg")
            (folder / f"{k:03d}.txt").write_text("Is there a dog in this image? Please answer yes or no.\tYes\n"
                                                 "Is there a cat in this image? Please answer yes or no.\tNo\n")
    return root


def test_chair_run_and_report_with_bootstrap(chair_world, tmp_path):
    data, images = chair_world
    out, rows = halluc.run("tiny-llava", ["test-textprior"], "chair",
                           RunOptions(data=data, images=images, out=tmp_path / "chair", max_new_tokens=6, device="cpu"))
    assert [r["method"] for r in rows] == ["none", "test-textprior"]
    assert {"chair_s", "chair_i", "recall", "avg_len", "n"} <= set(rows[0]) and rows[0]["n"] == 4
    report_dir = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(out), "--out", str(report_dir), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    assert "test-textprior" in result.stdout
    board = json.loads((report_dir / "leaderboard.json").read_text())["rows"]
    for key in ("chair_i", "chair_s", "recall"):  # every metric gets its interval from the same resamples
        row = next(r for r in board if (r["method"], r["metric"]) == ("test-textprior", key))
        assert row["ci_low"] <= row["delta"] <= row["ci_high"]
    html = (report_dir / "leaderboard.html").read_text()
    assert html.count("<svg") >= 2 and "<script src" not in html
    assert (report_dir / "leaderboard.md").read_text().startswith("# Leaderboard")
    assert "ci_low" in (report_dir / "leaderboard.csv").read_text().splitlines()[0]


def test_mme_run_scores_subtasks_and_totals(mme_release, tmp_path):
    out, rows = halluc.run("tiny-llava", ["none"], "mme", RunOptions(images=mme_release, out=tmp_path / "mme",
                                                                    splits=("existence", "count"), max_new_tokens=3,
                                                                    device="cpu"))
    by_split = {r["split"]: r for r in rows}
    assert set(by_split) == {"existence", "count"}  # totals need every subtask of a group
    assert all(0 <= r["score"] <= 200 and r["n"] == 4 for r in rows)


def test_paired_intervals_on_known_units():
    mean = lambda split, units: {"split": split, "m": 100.0 * sum(units) / len(units)}  # noqa: E731
    shifted = paired_intervals({"s": {"none": [0] * 50, "b": [1] * 50}}, mean, lambda rows: [], n=200)
    assert shifted[("s", "b", "m")] == (100.0, 100.0)
    same = paired_intervals({"s": {"none": [0, 1] * 50, "b": [0, 1] * 50}}, mean, lambda rows: [], n=200)
    assert same[("s", "b", "m")] == (0.0, 0.0)


def test_report_without_results_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no results.json in" in result.stderr
