"""`halluc run` end to end on a tiny model: results, resume after a kill, shards, cache, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import halluc
from halluc.benchmarks.pope.scoring import build_pope_from_coco
from halluc.errors import HallucError
from halluc.evaluation.run import RunOptions, SampleLog
from halluc.world import WorldConfig, generate_world

METRICS = {"accuracy", "precision", "recall", "f1", "yes_ratio", "unparsed", "n"}


@pytest.fixture(scope="module")
def pope_world(tmp_path_factory) -> tuple[Path, Path]:
    """A small POPE set (3 splits) over toy-world images, in the official file format."""
    root = tmp_path_factory.mktemp("pope_world")
    files = generate_world(root / "world", WorldConfig(image_size=64, min_objects=3, seed=1), n_images=8, split="val")
    data = root / "pope"
    data.mkdir()
    for split in ("random", "popular", "adversarial"):
        questions = build_pope_from_coco(files.instances, split, n_images=2, seed=0)
        with (data / f"coco_pope_{split}.json").open("w") as f:
            for q in questions:
                f.write(json.dumps({"question_id": q.question_id, "image": q.image, "text": q.text,
                                    "label": "yes" if q.label else "no"}) + "\n")
    return data, files.images


def options(pope_world, out, **kw) -> RunOptions:
    data, images = pope_world
    return RunOptions(data=data, images=images, out=out, device="cpu", **kw)


def test_run_writes_results_with_score_keys_and_provenance(pope_world, tmp_path):
    out, rows = halluc.run("tiny-llava", ["none"], "pope", options(pope_world, tmp_path / "run", max_new_tokens=3))
    splits = {r["split"] for r in rows}
    assert splits == {"random", "popular", "adversarial", "mean"}
    assert all(METRICS <= set(r) for r in rows)
    assert all(r["n"] == 12 for r in rows if r["split"] != "mean")
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "tiny-llava" and config["protocol"] == "llava"
    assert {"versions", "commit", "device", "date"} <= set(config["provenance"])
    assert config["decoding"]["max_new_tokens"] == 3
    results = json.loads((out / "results.json").read_text())
    assert results["rows"] == rows


def test_existing_run_needs_resume_and_same_config(pope_world, tmp_path):
    out = tmp_path / "run"
    halluc.run("tiny-llava", ["none"], "pope", options(pope_world, out, max_new_tokens=2, splits=("random",)))
    with pytest.raises(HallucError, match="already holds a run: pass --resume"):
        halluc.run("tiny-llava", ["none"], "pope", options(pope_world, out, max_new_tokens=2, splits=("random",)))
    with pytest.raises(HallucError, match=r"cannot resume .*: .*seed \(0 vs 5\) differ"):
        halluc.run("tiny-llava", ["none"], "pope", options(pope_world, out, max_new_tokens=2, splits=("random",),
                                                           resume=True, seed=5))
    with pytest.raises(HallucError, match="nothing to resume"):
        halluc.run("tiny-llava", ["none"], "pope", options(pope_world, tmp_path / "new", resume=True))


def test_cache_reuses_outputs(pope_world, tmp_path):
    cache = tmp_path / "cache"
    kw = dict(max_new_tokens=2, splits=("random",), cache_dir=cache)
    _, first = halluc.run("tiny-llava", ["none"], "pope", options(pope_world, tmp_path / "a", **kw))
    _, second = halluc.run("tiny-llava", ["none"], "pope", options(pope_world, tmp_path / "b", **kw))
    samples = tmp_path / "b" / "samples"
    lines = SampleLog(samples / next(samples.iterdir()).name / "random.jsonl").read()
    assert all(row["cached"] for row in lines.values())
    assert [r["f1"] for r in first] == [r["f1"] for r in second]


@pytest.mark.parametrize("kwargs,message", [
    (dict(splits=("randm",)), "unknown POPE split 'randm'"),
    (dict(protocol="lava"), "unknown POPE protocol 'lava'"),
])
def test_bad_run_options(pope_world, tmp_path, kwargs, message):
    with pytest.raises(HallucError, match=message):
        halluc.run("tiny-llava", ["none"], "pope", options(pope_world, tmp_path / "x", **kwargs))


def test_missing_images_are_named(pope_world, tmp_path):
    data, images = pope_world
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HallucError, match=r"images missing from .*empty: .*\.png"):
        halluc.run("tiny-llava", ["none"], "pope", RunOptions(data=data, images=empty, out=tmp_path / "r"))


def _cli(*args):
    return [sys.executable, "-m", "halluc", *args]


# All 36 questions with long answers: the run must still be going when the test sees 3 finished samples
# and kills it (8 short answers once finished on a fast machine before the kill landed).
KILL_TOKENS, KILL_SAMPLES = 24, 36


def _run_args(pope_world, out):
    data, images = pope_world
    return ["run", "--model", "tiny-llava", "--benchmark", "pope", "--data", str(data), "--images", str(images),
            "--out", str(out), "--max-new-tokens", str(KILL_TOKENS), "--device", "cpu"]


def _in_process(pope_world, out):
    """The uninterrupted reference, run in this process (same arguments as `_run_args`)."""
    halluc.run("tiny-llava", ["none"], "pope", options(pope_world, out, max_new_tokens=KILL_TOKENS))


def _lines(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in out.glob("samples/*/*.jsonl"))


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(pope_world, tmp_path):
    env = {**os.environ, "HALLUC_PROGRESS": "0"}
    reference = tmp_path / "reference"
    _in_process(pope_world, reference)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*_run_args(pope_world, killed)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _lines(killed) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.json").exists()
    finished = _lines(killed)
    subprocess.run(_cli(*_run_args(pope_world, killed), "--resume"), check=True, env=env, capture_output=True)
    rows = lambda d: [{k: v for k, v in r.items() if k not in ("seconds_per_sample", "tokens_per_second",  # noqa: E731
                                                              "peak_memory_mb")}
                      for r in json.loads((d / "results.json").read_text())["rows"]]
    assert rows(killed) == rows(reference)
    assert 3 <= finished < KILL_SAMPLES


@pytest.mark.slow
def test_two_shards_merge_into_the_single_process_result(pope_world, tmp_path):
    env = {**os.environ, "HALLUC_PROGRESS": "0", "WORLD_SIZE": "2"}
    single = tmp_path / "single"
    _in_process(pope_world, single)
    sharded = tmp_path / "sharded"
    procs = [subprocess.Popen(_cli(*_run_args(pope_world, sharded)), env={**env, "RANK": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in (0, 1)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    strip = lambda d: [{k: v for k, v in r.items() if k not in ("seconds_per_sample", "tokens_per_second",  # noqa: E731
                                                               "peak_memory_mb")}
                       for r in json.loads((d / "results.json").read_text())["rows"]]
    assert strip(sharded) == strip(single)
    assert list((sharded / "samples").glob("*/random.shard-1-of-2.jsonl"))


@pytest.mark.parametrize("method", ["vhr", "var", "pai", "damro", "cca", "vista", "vcd", "ritual", "ritual-vcd",
                                    "agla", "opera", "only", "vaf", "memvr", "deco", "sid", "icd", "tame",
                                    "farsight"])
def test_every_method_runs_through_halluc_run(pope_world, tmp_path, method):
    params = {"var.layers": (0, 1), "var.tau": 2.0} if method == "var" else {}
    params = {"pai.layers": (0, 1)} if method == "pai" else params
    params = {"sid.select_layer": 0} if method == "sid" else params  # the 2-layer model hides tokens in layer 1
    _, rows = halluc.run("tiny-llava", [method], "pope",
                         options(pope_world, tmp_path / method, max_new_tokens=2, splits=("random",), limit=2),
                         **params)
    label = "ritual+vcd" if method == "ritual-vcd" else method  # an alias runs as the stack it stands for
    assert [r["method"] for r in rows] == ["none", label] and all(r["n"] == 2 for r in rows)


def test_method_all_runs_every_registered_method_once(pope_world, tmp_path):
    from halluc.evaluation.run import expand_all, parse_entries
    from halluc.interventions import aliases, method_class, method_names

    # every registered method but the controls (yes-prompt, yes-bias, logit-shift, apc: `--controls` adds them)
    every = [n for n in method_names() if n != "none" and method_class(n).category != "control"]
    assert expand_all(["all"]) == every and not set(aliases()) & set(every)
    others = [n for n in every if n != "vcd"]
    assert expand_all(["vcd", "all", "vhr+vcd"]) == ["vcd", *others, "vhr+vcd"]  # vcd once, the stack kept
    assert [e.label for e in parse_entries(["all"], {})] == ["none", *every]
    _, rows = halluc.run("tiny-llava", ["all"], "pope",
                         options(pope_world, tmp_path / "all", max_new_tokens=1, splits=("random",), limit=1),
                         **{"sid.select_layer": 0})
    assert [r["method"] for r in rows] == ["none", *every]
