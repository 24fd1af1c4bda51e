"""Input never chooses where halluc writes (or which local file it reads).

Every source writer (`--source hf` for POPE, MME and HallusionBench) and every task that reads image names
from a question file is given tiny datasets with one hostile field each: an absolute path, `..`, a path
separator inside a name, a non-image file type (a `.pth` that Python would execute), a control character,
and an image cell that names a local file instead of holding bytes. Each must be refused in one line, with
the file tree under the test's root unchanged: nothing written outside the data home, nothing half-written
inside it.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from halluc.benchmarks.build import build_task
from halluc.benchmarks.sources import materialize
from halluc.cli import app
from halluc.errors import HallucError
from halluc.safe_paths import confined, name_component, relative_parts

datasets = pytest.importorskip("datasets")


def _png(colour=(10, 20, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return buf.getvalue()


def _tree(root: Path) -> dict[str, tuple]:
    """Every path under root with its kind and size (content changes in size or link target show too)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            stat = path.lstat()
            found[str(path.relative_to(root))] = (path.is_symlink(), path.is_dir(), stat.st_size)
    return found


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A root holding the data home, a saved-datasets folder, an `outside` folder an attack aims at, and a
    secret local file an image cell may name."""
    (tmp_path / "home").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "secret.png").write_bytes(_png((1, 2, 3)))
    monkeypatch.setenv("HALLUC_DATA", str(tmp_path / "home"))
    return tmp_path


def _image_cell(world: Path, kind: str) -> dict:
    return {"bytes": None, "path": str(world / "secret.png")} if kind == "path" else {"bytes": _png(), "path": None}


def _save(world: Path, name: str, split_rows: dict[str, list[dict]]) -> Path:
    folder = world / "saved" / name
    # the Image feature would embed a path cell's file at save time; a hostile file need not have done so
    features = datasets.Features({**datasets.Dataset.from_list(next(iter(split_rows.values()))).features,
                                  "image": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}})
    dd = datasets.DatasetDict({split: datasets.Dataset.from_list(rows, features=features)
                               for split, rows in split_rows.items()})
    dd.save_to_disk(str(folder))
    return folder


def _pope(world: Path, image_source: str, cell: str = "bytes") -> Path:
    rows = {split: [{"question_id": "1", "question": "Is there a dog in the image?", "answer": "yes",
                     "image_source": "COCO_val2014_000000000001", "category": split, "image": _image_cell(world, "")},
                    {"question_id": "2", "question": "Is there a cat in the image?", "answer": "no",
                     "image_source": image_source, "category": split, "image": _image_cell(world, cell)}]
            for split in ("random", "popular", "adversarial")}
    return _save(world, "pope", rows)


def _mme(world: Path, category: str, question_id: str, cell: str = "bytes") -> Path:
    rows = [{"question_id": "existence/000000006040.jpg", "question": "Is there a train? Please answer yes or no.",
             "answer": "Yes", "category": "existence", "image": _image_cell(world, "")},
            {"question_id": question_id, "question": "Is there a dog? Please answer yes or no.", "answer": "No",
             "category": category, "image": _image_cell(world, cell)}]
    return _save(world, "mme", {"test": rows})


def _hallusionbench(world: Path, filename: str, cell: str = "bytes") -> Path:
    def row(n: int, name: str, image: dict) -> dict:
        return {"category": "VS", "subcategory": "chart", "visual_input": "1", "set_id": "0", "figure_id": str(n),
                "sample_note": "", "question_id": "0", "question": "Is the bar blue?", "gt_answer_details": "",
                "gt_answer": "1", "filename": name, "image": image}
    return _save(world, "hb", {"image": [row(0, "./VS/chart/0_0.png", _image_cell(world, "")),
                                         row(1, filename, _image_cell(world, cell))]})


def _outside(world: Path) -> str:
    return str(world / "outside" / "evil")


HOSTILE_NAMES = [  # (label, value builder): each a different class of bad name
    ("absolute", lambda w: _outside(w)),
    ("parent", lambda w: "../../../outside/evil"),
    ("separator", lambda w: "sub/evil"),
    ("dotdot", lambda w: ".."),
    ("control", lambda w: "evil\x00x"),
    ("backslash", lambda w: "..\\..\\outside\\evil"),
]


def _refused_without_writes(world: Path, saved: Path, benchmark: str, pattern: str) -> None:
    before = _tree(world)
    with pytest.raises(HallucError, match=pattern) as err:
        materialize(benchmark, saved)
    assert "\n" not in str(err.value)
    assert _tree(world) == before


@pytest.mark.parametrize("label,value", HOSTILE_NAMES)
def test_pope_image_source_never_chooses_a_path(world, label, value):
    saved = _pope(world, value(world))
    _refused_without_writes(world, saved, "pope", "image_source")


@pytest.mark.parametrize("label,value", HOSTILE_NAMES)
def test_mme_category_never_chooses_a_folder(world, label, value):
    saved = _mme(world, value(world), "existence/000000000002.jpg")
    _refused_without_writes(world, saved, "mme", "category")


@pytest.mark.parametrize("question_id", ["existence/..", "existence/evil.pth", "existence/evil\x01.jpg",
                                         "existence/run.sh"])
def test_mme_question_id_names_an_image_inside_its_folder(world, question_id):
    saved = _mme(world, "existence", question_id)
    _refused_without_writes(world, saved, "mme", "question_id")


@pytest.mark.parametrize("filename", [
    "/tmp/evil.png", "../outside/evil.png", "./VS/../../outside/evil.png", "VS/chart/evil.pth", "evil.pth",
    "C:/evil.png", "VS\\chart\\0.png", "VS/ch\x00art/0.png", "", ])
def test_hallusionbench_filename_stays_an_image_inside_the_folder(world, filename):
    saved = _hallusionbench(world, filename)
    if not filename:  # a row without a figure writes no image: the rest is written, whole
        materialize("hallusionbench", saved)
        return
    _refused_without_writes(world, saved, "hallusionbench", "filename")


@pytest.mark.parametrize("benchmark", ["pope", "mme", "hallusionbench"])
def test_an_image_cell_naming_a_local_file_is_refused(world, benchmark):
    saved = {"pope": lambda: _pope(world, "COCO_val2014_000000000002", cell="path"),
             "mme": lambda: _mme(world, "existence", "existence/000000000002.jpg", cell="path"),
             "hallusionbench": lambda: _hallusionbench(world, "./VS/chart/0_1.png", cell="path")}[benchmark]()
    _refused_without_writes(world, saved, benchmark, "names a file")


@pytest.mark.parametrize("benchmark,build", [
    ("pope", lambda w: _pope(w, "COCO_val2014_000000000002")),
    ("mme", lambda w: _mme(w, "existence", "existence/000000000002.jpg")),
    ("hallusionbench", lambda w: _hallusionbench(w, "./VS/chart/0_1.png"))])
def test_benign_datasets_are_written_whole_inside_the_data_home(world, benchmark, build):
    saved = build(world)
    outside_before = {k: v for k, v in _tree(world).items() if not k.startswith("home")}
    written = materialize(benchmark, saved)
    assert written.data.resolve().is_relative_to((world / "home").resolve())
    assert {k: v for k, v in _tree(world).items() if not k.startswith("home")} == outside_before
    root = next((world / "home" / "hf" / benchmark).iterdir())
    assert (root / "complete").is_file() and not list(root.parent.glob(".*partial"))


def test_a_failed_write_leaves_nothing_half_written(world, monkeypatch):
    from halluc.benchmarks import sources

    saved = _pope(world, "COCO_val2014_000000000002")

    def fail_midway(self, root):
        (root / "images").mkdir()
        (root / "images" / "half.jpg").write_bytes(b"x")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sources.Plan, "write", fail_midway)
    with pytest.raises(OSError):
        materialize("pope", saved)
    assert not (world / "home" / "hf" / "pope").exists() or not any((world / "home" / "hf" / "pope").iterdir())


def test_the_cli_refuses_a_hostile_dataset_in_one_line_before_any_run_directory(world):
    saved = _pope(world, _outside(world))
    before = _tree(world)
    result = CliRunner().invoke(app, ["run", "--model", "tiny-llava", "--benchmark", "pope", "--source", "hf",
                                      "--data", str(saved), "--out", str(world / "run")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "image_source" in lines[0], result.output
    assert _tree(world) == before


# ---------------------------------------------------------------- local question files name images too

def _local_pope(world: Path, image: str) -> Path:
    folder = world / "pope"
    folder.mkdir()
    for split in ("random", "popular", "adversarial"):
        line = {"question_id": 1, "image": image, "text": "Is there a dog in the image?", "label": "yes"}
        (folder / f"coco_pope_{split}.json").write_text(json.dumps(line) + "\n", encoding="utf-8")
    (world / "images").mkdir()
    return folder


@pytest.mark.parametrize("image", ["/etc/passwd", "../secret.png", "a/../../secret.png"])
def test_a_local_question_file_never_reads_outside_the_images_folder(world, image):
    data = _local_pope(world, image)
    task = build_task("pope", data=data, images=world / "images", source="local")
    with pytest.raises(HallucError, match="coco_pope_random.json question 1"):
        task.samples("random")


def test_a_symbolic_link_inside_the_images_folder_cannot_lead_out(world):
    data = _local_pope(world, "link.png")
    (world / "images" / "link.png").symlink_to(world / "secret.png")
    task = build_task("pope", data=data, images=world / "images", source="local")
    with pytest.raises(HallucError, match="outside"):
        task.samples("random")


def test_hallusionbench_question_file_never_reads_outside(world):
    folder = world / "hb"
    folder.mkdir()
    rows = [{"category": "VS", "subcategory": "chart", "visual_input": "1", "set_id": "0", "figure_id": "0",
             "sample_note": "", "question_id": "0", "question": "Is the bar blue?", "gt_answer_details": "",
             "gt_answer": "1", "filename": "../secret.png"}]
    (folder / "HallusionBench.json").write_text(json.dumps(rows), encoding="utf-8")
    task = build_task("hallusionbench", data=folder, images=folder)
    with pytest.raises(HallucError, match="filename"):
        task.samples("image")


# ---------------------------------------------------------------- the helpers themselves

@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "a\x00", "x" * 300, 5, None])
def test_name_component_refuses_everything_but_a_plain_name(name):
    with pytest.raises(HallucError):
        name_component(name, "field")


def test_plain_names_and_relative_paths_pass(tmp_path):
    assert name_component("COCO_val2014_000000000001.jpg", "f") == "COCO_val2014_000000000001.jpg"
    assert relative_parts("./VS/chart/0_0.png", "f") == ("VS", "chart", "0_0.png")
    assert confined(tmp_path, "VS/chart/0_0.png", "f", frozenset({".png"})) == tmp_path / "VS" / "chart" / "0_0.png"


def test_zip_members_are_confined(tmp_path):
    import zipfile

    from halluc.benchmarks.fetch import _unpack

    archive = tmp_path / "home" / "mme" / "eval_tool.zip"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("eval_tool/ok.txt", "fine")
        z.writestr("../../escaped.txt", "evil")
    with pytest.raises(HallucError, match="escaped.txt"):
        _unpack(archive)
    assert not (tmp_path / "escaped.txt").exists() and not (archive.parent / "eval_tool").exists()


def test_read_outputs_takes_plain_names_only(tmp_path):
    from halluc.evaluation.run import read_outputs

    for entry, split in [("../..", "random"), ("vcd-1234", "../x"), ("/abs", "random")]:
        with pytest.raises(HallucError):
            read_outputs(tmp_path, entry, split)
    folder = tmp_path / "samples" / "vcd-1234"
    folder.mkdir(parents=True)
    (folder / "random.jsonl").write_text(json.dumps({"id": "1", "text": "Yes"}) + "\n", encoding="utf-8")
    assert read_outputs(tmp_path, "vcd-1234", "*") == {}  # a pattern in a split name matches nothing
    assert list(read_outputs(tmp_path, "vcd-1234", "random")) == ["1"]
