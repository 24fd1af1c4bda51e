"""`--source hf`: tiny datasets in the HF mirrors' schemas, saved locally, give the same samples as the
local files; `halluc run --source hf` runs end to end; AMBER and HallusionBench tasks run on tiny models."""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import halluc
from halluc.benchmarks.build import build_task
from halluc.benchmarks.sources import hf_benchmarks, materialize
from halluc.benchmarks.spec import benchmark_spec
from halluc.cli import app
from halluc.errors import HallucError
from halluc.evaluation.intervals import task_from_config
from halluc.evaluation.run import RunOptions

datasets = pytest.importorskip("datasets")


def _png(colour, size=(24, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _jpg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), colour).save(buf, format="JPEG")
    return buf.getvalue()


def _image_column(ds: "datasets.Dataset") -> "datasets.Dataset":
    return ds.cast_column("image", datasets.Image())


def _where_free(target):
    # MME items carry their image's absolute path; the file's bytes are compared below instead
    return dataclasses.replace(target, image_path="") if hasattr(target, "image_path") else target


def _same_samples(a, b):
    for split in a.splits():
        left, right = a.samples(split), b.samples(split)
        assert [(s.id, s.prompt, _where_free(s.target)) for s in left] == \
            [(s.id, s.prompt, _where_free(s.target)) for s in right]
        assert [s.image.read_bytes() for s in left] == [s.image.read_bytes() for s in right]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HALLUC_DATA", str(tmp_path / "home"))
    return tmp_path / "home"


# ---------------------------------------------------------------- POPE (lmms-lab/POPE, config Full)

@pytest.fixture
def pope_pair(tmp_path):
    """The same 2 images x 4 questions per split as local files and as a saved DatasetDict."""
    local, images = tmp_path / "local", tmp_path / "local" / "images"
    images.mkdir(parents=True)
    pictures = {"COCO_val2014_000000000001": _jpg((200, 20, 20)), "COCO_val2014_000000000002": _jpg((20, 20, 200))}
    for name, data in pictures.items():
        (images / f"{name}.jpg").write_bytes(data)
    splits = {}
    for split in ("random", "popular", "adversarial"):
        rows = [{"question_id": str(k + 1), "question": f"Is there a {obj} in the image?", "answer": label,
                 "image_source": src, "category": split, "image": {"bytes": pictures[src], "path": None}}
                for k, (src, obj, label) in enumerate([(s, o, lab) for s in pictures
                                                       for o, lab in (("dog", "yes"), ("cat", "no"))])]
        (local / f"coco_pope_{split}.json").write_text("".join(
            json.dumps({"question_id": int(r["question_id"]), "image": f"{r['image_source']}.jpg",
                        "text": r["question"], "label": r["answer"]}) + "\n" for r in rows))
        splits[split] = _image_column(datasets.Dataset.from_list(rows))
    saved = tmp_path / "hf_pope"
    datasets.DatasetDict(splits).save_to_disk(str(saved))
    return local, images, saved


def test_pope_hf_and_local_give_identical_samples(pope_pair, home):
    local, images, saved = pope_pair
    from_files = build_task("pope", protocol="vcd", data=local, images=images, source="local")
    from_hf = build_task("pope", protocol="vcd", data=saved, source="hf")
    _same_samples(from_files, from_hf)
    assert from_hf.describe()["data_source"]["dataset"] == str(saved.resolve())
    again = build_task("pope", data=saved)  # auto: no --images -> hf; written once, reused
    assert again.data_dir == from_hf.data_dir


def test_hf_source_refuses_images_and_names_offline_failures(pope_pair, home):
    _, images, saved = pope_pair
    with pytest.raises(HallucError, match="drop --images"):
        build_task("pope", data=saved, images=images, source="hf")
    with pytest.raises(HallucError, match="cannot load the HF dataset .*saved dataset has splits|has splits"):
        materialize("mme", saved)
    with pytest.raises(HallucError, match="chair has no HF dataset source"):
        build_task("chair", source="hf")


def test_pinned_revisions_are_full_commits():
    pinned = [benchmark_spec(name).data.hf for name in hf_benchmarks()]
    assert len(pinned) == 3 and all(len(s.revision) == 40 and s.dataset.startswith("lmms-lab/") for s in pinned)


def test_run_source_hf_end_to_end(pope_pair, home, tmp_path):
    _, _, saved = pope_pair
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--model", "tiny-llava", "--benchmark", "pope", "--source", "hf",
                                      "--data", str(saved), "--protocol", "vcd", "--max-new-tokens", "2",
                                      "--out", str(out), "--device", "cpu", "--split", "random"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["data_source"]["source"] == "hf" and config["options"]["source"] == "hf"
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["split"], r["n"]) for r in rows] == [("random", 4)]
    # the report rebuilds the task from the recorded source, not from where --images would point
    assert task_from_config(config).describe()["data_source"]["source"] == "hf"
    with pytest.raises(HallucError):  # the saved dataset is no local question file
        task_from_config({**config, "options": {**config["options"], "source": "local"}})


# ---------------------------------------------------------------- MME (lmms-lab/MME) and HallusionBench

def test_mme_hf_and_local_give_identical_samples(tmp_path, home):
    release = tmp_path / "release"
    rows = []
    for subtask in ("existence", "count"):
        (release / subtask).mkdir(parents=True)
        for k in range(2):
            picture = _png((40 * k, 90, 200))
            (release / subtask / f"{k:03d}.png").write_bytes(picture)
            qa = [("Is there a dog in this image? Please answer yes or no.", "Yes"),
                  ("Is there a cat in this image? Please answer yes or no.", "No")]
            (release / subtask / f"{k:03d}.txt").write_text("".join(f"{q}\t{a}\n" for q, a in qa))
            rows += [{"question_id": f"{subtask}/{k:03d}.png", "question": q, "answer": a, "category": subtask,
                      "image": {"bytes": picture, "path": None}} for q, a in qa]
    saved = tmp_path / "hf_mme"
    datasets.DatasetDict({"test": _image_column(datasets.Dataset.from_list(rows))}).save_to_disk(str(saved))
    kw = dict(splits=["existence", "count"])
    _same_samples(build_task("mme", images=release, **kw), build_task("mme", data=saved, source="hf", **kw))


def _hallusionbench_rows(pictures):
    rows = []
    for figure, visual in (("0", "1"), ("1", "2")):
        for qid, gt in (("0", "1"), ("1", "0")):
            rows.append({"category": "VD", "subcategory": "illusion", "visual_input": visual, "set_id": "0",
                         "figure_id": figure, "sample_note": "circle", "question_id": qid,
                         "question": f"Is circle {qid} larger?", "gt_answer_details": "...", "gt_answer": gt,
                         "filename": f"./VD/illusion/0_{figure}.png"})
    rows.append({"category": "VS", "subcategory": "chart", "visual_input": "0", "set_id": "1", "figure_id": "0",
                 "sample_note": "gdp", "question_id": "0", "question": "Is the GDP of X the highest?",
                 "gt_answer_details": "...", "gt_answer": "0", "filename": None})
    return rows


def test_hallusionbench_hf_local_and_a_run(tmp_path, home):
    pictures = {"./VD/illusion/0_0.png": _png((10, 200, 10)), "./VD/illusion/0_1.png": _png((200, 200, 10))}
    rows = _hallusionbench_rows(pictures)
    local = tmp_path / "hb"
    for name, data in pictures.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)
    (local / "HallusionBench.json").write_text(json.dumps(rows))
    image_rows = [{**r, "image": {"bytes": pictures[r["filename"]], "path": None}} for r in rows if r["filename"]]
    saved = tmp_path / "hf_hb"
    datasets.DatasetDict({"image": _image_column(datasets.Dataset.from_list(image_rows))}).save_to_disk(str(saved))
    from_files = build_task("hallusionbench", data=local, images=local)
    assert len(from_files.samples("image")) == 4        # the question without a figure is not run
    _same_samples(from_files, build_task("hallusionbench", data=saved, source="hf"))
    out, result_rows = halluc.run("tiny-llava", ["none"], "hallusionbench",
                                  RunOptions(data=local, images=local, out=tmp_path / "run", max_new_tokens=3,
                                             device="cpu"))
    (row,) = result_rows
    assert row["benchmark"] == "hallusionbench" and row["n"] == 4 and 0 <= row["qacc"] <= 100


# ---------------------------------------------------------------- AMBER on a tiny data folder

def test_amber_run_on_tiny_files(tmp_path, home):
    data, images = tmp_path / "amber", tmp_path / "amber_images"
    (data / "query").mkdir(parents=True)
    images.mkdir()
    for k in (1, 2):
        Image.new("RGB", (24, 24), (60 * k, 120, 30)).save(images / f"AMBER_{k}.jpg")
    annotations = [{"id": 1, "type": "generative", "truth": ["dog", "grass"], "hallu": ["cat"]},
                   {"id": 2, "type": "generative", "truth": ["cat"], "hallu": ["dog"]},
                   {"id": 3, "type": "discriminative-hallucination", "truth": "yes"},
                   {"id": 4, "type": "discriminative-attribute-state", "truth": "no"},
                   {"id": 5, "type": "relation", "truth": "no"}]
    queries = [{"id": a["id"], "image": f"AMBER_{1 + a['id'] % 2}.jpg",
                "query": "Describe this image." if a["type"] == "generative" else "Is there a dog in this image?"}
               for a in annotations]
    (data / "annotations.json").write_text(json.dumps(annotations))
    (data / "relation.json").write_text(json.dumps({"dog": [], "cat": [], "grass": ["ground"], "ground": []}))
    (data / "safe_words.txt").write_text("light\n")
    (data / "query" / "query_all.json").write_text(json.dumps(queries))
    out, rows = halluc.run("tiny-llava", ["none"], "amber", RunOptions(data=data, images=images, out=tmp_path / "run",
                                                                       max_new_tokens=4, device="cpu"))
    by_split = {r["split"]: r for r in rows}
    assert set(by_split) == {"generative", "discriminative", "overall"}
    assert all(r["extractor"] in ("offline", "official") for r in rows)
    assert by_split["discriminative"]["n"] == 3 and by_split["generative"]["n"] == 2
    overall = by_split["overall"]
    assert overall["amber_score"] == pytest.approx((100 - overall["chair"] + overall["f1"]) / 2)
    assert Path(out / "config.json").exists()
