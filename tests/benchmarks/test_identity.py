"""A run directory has one identity (`halluc.evaluation.identity`), checked on resume, on every shard, in the
output cache and by `halluc report`. Each bug an audit found first has its own end-to-end test here; then
every field of the record is changed once on each of the four paths."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

import halluc
import halluc.api
import halluc.api.core
from halluc.errors import HallucError
from halluc.evaluation import identity as ident
from halluc.evaluation.run import Runner, RunOptions, Shard, parse_entries
from halluc.reports.model import Run, build_report
from tests.benchmarks.fake_runs import fake_rows
from tests.benchmarks.test_run import options, pope_world  # noqa: F401  (fixture)

TIMING = {"seconds_per_sample", "tokens_per_second", "peak_memory_mb"}


def scores(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def small(pope_world, out, **kw):  # noqa: F811
    kw = {"max_new_tokens": 2, "splits": ("random",), "limit": 2, **kw}
    return options(pope_world, out, **kw)


def copy_data(pope_world, tmp_path, flip_labels=False) -> tuple[Path, Path]:  # noqa: F811
    """The POPE files copied (same ids, same questions), every label flipped when asked."""
    data, images = pope_world
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    if flip_labels:
        for path in copy.glob("coco_pope_*.json"):
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            for row in rows:
                row["label"] = "no" if row["label"] == "yes" else "yes"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return copy, images


# ---------------------------------------------------------------- the audit's cases, end to end

def test_resume_with_other_labels_under_the_same_ids_is_refused(pope_world, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out))
    flipped = copy_data(pope_world, tmp_path, flip_labels=True)
    with pytest.raises(HallucError, match=r"cannot resume .*: files \(coco_pope_random.json\) differ"):
        halluc.run("tiny-llava", ["none"], "pope", small(flipped, out, resume=True))


def test_the_same_files_moved_elsewhere_resume(pope_world, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    _, rows = halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out))
    _, again = halluc.run("tiny-llava", ["none"], "pope", small(copy_data(pope_world, tmp_path), out, resume=True))
    assert scores(again) == scores(rows)


def test_a_narrower_split_or_limit_on_resume_is_refused_and_a_wider_one_extends(pope_world, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, splits=("random", "popular")))
    with pytest.raises(HallucError, match=r"splits \(.*\) differ.*never drop what it covers"):
        halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, resume=True))
    with pytest.raises(HallucError, match=r"limit \(2 vs 1\) differ"):
        halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, splits=("random", "popular"), limit=1,
                                                         resume=True))
    before = {p.name: p.read_text() for p in out.glob("samples/*/*.jsonl")}
    _, rows = halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, splits=("random", "popular",
                                                                                       "adversarial"), limit=3,
                                                                  resume=True))
    assert {r["split"] for r in rows} == {"random", "popular", "adversarial", "mean"}
    assert all(r["n"] == 3 for r in rows if r["split"] != "mean")
    after = {p.name: p.read_text() for p in out.glob("samples/*/*.jsonl")}
    assert all(after[name].startswith(text) for name, text in before.items())  # nothing regenerated or dropped
    config = json.loads((out / "config.json").read_text())
    assert config["identity"]["splits"] == ["random", "popular", "adversarial"] and config["identity"]["limit"] == 3


def test_another_dtype_on_resume_is_refused_and_config_is_kept(pope_world, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out))
    config = (out / "config.json").read_text()
    with pytest.raises(HallucError, match=r'dtype \("float32" vs "bfloat16"\) differ'):
        halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, dtype="bfloat16", resume=True))
    assert (out / "config.json").read_text() == config and '"dtype": "float32"' in config


def test_shards_with_another_max_new_tokens_are_not_merged(pope_world, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, max_new_tokens=3, shard=Shard(1, 2)))
    with pytest.raises(HallucError, match=r"shard 1-of-2 last ran another configuration \(max_new_tokens \(3 vs 2\)"):
        halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, shard=Shard(0, 2), shard_timeout=1))
    assert not (out / "results.json").exists()
    record = out / "shards" / "1-of-2.json"
    os.utime(record, (time.time() + 60, time.time() + 60))  # as if shard 1 had started after shard 0
    with pytest.raises(HallucError, match=r"shard 1-of-2 ran another configuration \(max_new_tokens \(3 vs 2\)"):
        halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, shard=Shard(0, 2), resume=True,
                                                         shard_timeout=600))


def test_a_refused_shard_stops_shard_0_at_once(pope_world, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    failure: list[BaseException] = []

    def shard_0():
        try:
            halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, shard=Shard(0, 2), shard_timeout=600))
        except BaseException as err:  # noqa: BLE001  (the test reads it)
            failure.append(err)

    worker = threading.Thread(target=shard_0)
    start = time.monotonic()
    worker.start()
    while not (out / "config.json").exists() and worker.is_alive():
        time.sleep(0.05)
    with pytest.raises(HallucError, match=r"max_new_tokens \(2 vs 5\) differ"):
        halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, max_new_tokens=5, shard=Shard(1, 2)))
    worker.join(timeout=120)
    assert not worker.is_alive() and time.monotonic() - start < 120
    assert len(failure) == 1 and "shard 1-of-2 refused: cannot resume" in str(failure[0])


def test_a_missing_shard_is_named_when_the_barrier_times_out(pope_world, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    with pytest.raises(HallucError, match=r"no new sample .* for 1 s \(--shard-timeout\): shard 1 of 2 misses 1 of"):
        halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, shard=Shard(0, 2), shard_timeout=1))


def test_the_shard_timeout_has_a_default_and_is_validated():
    assert RunOptions().shard_timeout == 1800
    for bad in (0, -1, float("nan"), float("inf"), True, "x"):
        with pytest.raises(HallucError, match="--shard-timeout must be a number of seconds > 0"):
            RunOptions(shard_timeout=bad)


def test_the_cache_does_not_serve_a_local_model_whose_weights_changed(pope_world, tmp_path):  # noqa: F811
    model_dir = tmp_path / "model"

    def save(seed):
        model = halluc.load("tiny-llava", seed=seed, device="cpu")
        model.model.save_pretrained(model_dir)
        model.processor.save_pretrained(model_dir)

    save(0)
    cache = tmp_path / "cache"
    halluc.run(str(model_dir), ["none"], "pope", small(pope_world, tmp_path / "a", cache_dir=cache))
    _, same = halluc.run(str(model_dir), ["none"], "pope", small(pope_world, tmp_path / "b", cache_dir=cache))
    assert all(json.loads(line)["cached"] for p in (tmp_path / "b").glob("samples/*/*.jsonl")
               for line in p.read_text().splitlines())
    save(1)  # new weights in the same directory: same name, no revision
    halluc.run(str(model_dir), ["none"], "pope", small(pope_world, tmp_path / "c", cache_dir=cache))
    lines = [json.loads(line) for p in (tmp_path / "c").glob("samples/*/*.jsonl")
             for line in p.read_text().splitlines()]
    assert lines and not any(line["cached"] for line in lines)


@pytest.mark.parametrize("methods,message", [
    (["vcd", "vcd+none"], "--method vcd and --method vcd\\+none are the same configuration"),
    (["ritual-vcd", "ritual+vcd"], "--method ritual-vcd and --method ritual\\+vcd are the same configuration"),
    (["vcd", "vcd"], "method 'vcd' is listed twice"),
])
def test_duplicate_configurations_after_canonicalisation_are_refused(methods, message):
    with pytest.raises(HallucError, match=message):
        parse_entries(methods, {})


def test_canonical_configurations():
    assert [e.label for e in parse_entries(["none+none", "vcd"], {})] == ["none", "vcd"]  # one vanilla
    assert parse_entries(["vcd"], {"alpha": 1})[1].key == parse_entries(["vcd"], {"alpha": 1.0})[1].key
    assert parse_entries(["ritual-vcd"], {"vcd.alpha": 2})[1].params["vcd"]["alpha"] == 2.0  # aliases take params


def test_method_none_plus_vcd_runs_one_row(pope_world, tmp_path):  # noqa: F811
    with pytest.raises(HallucError, match="same configuration"):
        halluc.run("tiny-llava", ["vcd", "vcd+none"], "pope", small(pope_world, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_hub_commit_known_only_after_loading_is_checked_before_any_generation(pope_world, tmp_path,  # noqa: F811
                                                                                 monkeypatch):
    """A hub model's commit is known once loaded: the run directory is checked again before generating."""
    out = tmp_path / "run"
    monkeypatch.setattr(halluc.api.core, "weights_before_load", lambda model, seed: None)
    halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out))
    assert json.loads((out / "config.json").read_text())["identity"]["weights"] == "random-init seed=0"
    real_load = halluc.api.core.load

    def moved_hub_branch(*args, **kwargs):
        lvlm = real_load(*args, **kwargs)
        lvlm.revision = "b" * 40
        return lvlm

    monkeypatch.setattr(halluc.api.core, "load", moved_hub_branch)
    before = sorted((p.name, p.read_text()) for p in out.glob("samples/*/*.jsonl"))
    with pytest.raises(HallucError, match=r'weights \("random-init seed=0" vs "bbbb.*"\) differ'):
        halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, limit=3, resume=True))
    assert sorted((p.name, p.read_text()) for p in out.glob("samples/*/*.jsonl")) == before


def test_a_run_from_before_identities_resumes_on_the_fields_it_recorded(pope_world, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    (plan,) = halluc.api.plan_runs("tiny-llava", ["none"], ["pope"], small(pope_world, out))
    out.mkdir()
    legacy = {k: v for k, v in plan.spec.describe().items() if k != "identity"}
    (out / "config.json").write_text(json.dumps(legacy, default=str))
    halluc.api.plan_runs("tiny-llava", ["none"], ["pope"], small(pope_world, out, resume=True))
    with pytest.raises(HallucError, match=r"cannot resume .*: seed differ"):
        halluc.api.plan_runs("tiny-llava", ["none"], ["pope"], small(pope_world, out, resume=True, seed=3))


def test_the_cli_refuses_a_bad_shard_timeout(tmp_path):
    from typer.testing import CliRunner

    from halluc.cli.app import app

    result = CliRunner().invoke(app, ["run", "--limit", "1", "--shard-timeout", "0", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        "error: --shard-timeout must be a number of seconds > 0; got 0.0"]


# ---------------------------------------------------------------- the question set of a protocol

def test_the_question_set_is_named_and_recorded(pope_world, tmp_path, monkeypatch, capsys):  # noqa: F811
    from halluc.benchmarks.pope.task import PopeTask

    monkeypatch.setattr(PopeTask, "question_set", lambda self: "coco")  # as the 3,000-question files read
    _, rows = halluc.run("tiny-llava", ["none"], "pope", small(pope_world, tmp_path / "run"))
    err = capsys.readouterr().err
    assert "note: pope protocol 'llava' is defined on the 2,910-question POPE files" in err
    assert "this run asks the 3,000-question POPE files" in err
    assert {r["question_set"] for r in rows} == {"coco"}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["identity"]["question_set"] == "coco"
    _, vcd_rows = halluc.run("tiny-llava", ["none"], "pope", small(pope_world, tmp_path / "vcd", protocol="vcd"))
    assert "note:" not in capsys.readouterr().err  # the vcd protocol is defined on the 3,000-question files


shared = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pope"


@pytest.mark.skipif(not shared.is_dir(), reason="the real POPE files are in ../shared")
def test_the_published_question_sets_are_recognised():
    from halluc.benchmarks.pope.task import build

    for name in ("coco", "coco_2910"):
        for splits in (None, ["popular"]):
            assert build(data=shared / name, images=Path("."), splits=splits).question_set() == name
    llava_on_3000 = build(protocol="llava", data=shared / "coco", images=Path("."))
    assert "defined on the 2,910-question" in ident.question_set_note(llava_on_3000)
    assert ident.question_set_note(build(protocol="vcd", data=shared / "coco", images=Path("."))) is None


# ---------------------------------------------------------------- every field, on each path

RECORD = {"model": "m", "weights": "sha256:aa", "dtype": "float32",
          "methods": [{"label": "none", "params": {"none": {}}}], "benchmark": "pope", "task_version": "1",
          "protocol": "llava", "task_settings": {}, "decoding": {"do_sample": False}, "max_new_tokens": 128,
          "question_set": "coco", "data_source": {"source": "local"}, "files": {"coco_pope_random.json": "aa"},
          "prompts": {"random": "p"}, "images": {"random": "i"}, "splits": ["random"], "limit": 10, "seed": 0}
CHANGED = {"model": "other", "weights": "sha256:bb", "dtype": "bfloat16",
           "methods": [{"label": "vcd", "params": {"vcd": {"alpha": 1.0}}}], "benchmark": "chair",
           "task_version": "2", "protocol": "vcd", "task_settings": {"extractor": "offline"},
           "decoding": {"do_sample": True}, "max_new_tokens": 64, "question_set": "coco_2910",
           "data_source": {"source": "hf", "dataset": "lmms-lab/POPE", "revision": "x"},
           "files": {"coco_pope_random.json": "bb"}, "prompts": {"random": "q"}, "images": {"random": "j"},
           "splits": ["popular"], "limit": 5, "seed": 1}


def test_every_field_has_a_change_below():
    assert set(CHANGED) == set(RECORD) == set(ident.FIELDS)


@pytest.mark.parametrize("field", ident.FIELDS)
def test_resume_refuses_a_change_of_every_field(field):
    current = {**RECORD, field: CHANGED[field]}
    reread = lambda splits, limit: {k: current[k] for k in ident.PER_SPLIT}  # noqa: E731
    assert field in ident.resume_conflicts(RECORD, current, reread)
    assert ident.resume_conflicts(RECORD, dict(RECORD), lambda s, n: {k: RECORD[k] for k in ident.PER_SPLIT}) == []


def test_resume_lets_coverage_grow_only():
    same = lambda s, n: {k: RECORD[k] for k in ident.PER_SPLIT}  # noqa: E731
    wider = {**RECORD, "splits": ["random", "popular"], "limit": None, "prompts": {"random": "p", "popular": "x"},
             "files": {**RECORD["files"], "coco_pope_popular.json": "cc"}}
    assert ident.resume_conflicts(RECORD, wider, same) == []
    assert ident.resume_conflicts(wider, RECORD, same) == ["files", "splits", "limit"]


@pytest.fixture(scope="module")
def planned(pope_world, tmp_path_factory):  # noqa: F811
    """A run directory with a shard-1 sample file, and the runner of its shard 0 (no model loaded)."""
    out = tmp_path_factory.mktemp("shards") / "run"
    (plan,) = halluc.api.plan_runs("tiny-llava", ["none"], ["pope"], small(pope_world, out, shard=Shard(0, 2)))
    runner = Runner(plan.spec, None, out, shard=plan.shard, shard_timeout=1)
    entry = plan.spec.entries[0]
    (out / "samples" / entry.key).mkdir(parents=True)
    (out / "samples" / entry.key / "random.shard-1-of-2.jsonl").write_text('{"id": "x", "text": "yes"}\n')
    return runner


@pytest.mark.parametrize("field", ident.FIELDS)
def test_a_shard_of_another_identity_is_named_for_every_field(planned, field):
    mine = planned.spec.identity()
    record = planned.out / "shards" / "1-of-2.json"
    record.parent.mkdir(exist_ok=True)
    record.write_text(json.dumps(mine))
    assert planned._mismatched_shards() == {}
    changed = {**mine, field: CHANGED[field]}
    if field == "limit":
        changed["limit"] = mine["limit"] + 1  # more than shard 0 covers: not mergeable
    record.write_text(json.dumps(changed))
    mismatched = planned._mismatched_shards()
    assert list(mismatched) == ["1-of-2"] and mismatched["1-of-2"][0].startswith(field + " (")


def test_the_cache_key_changes_with_every_field_that_decides_an_output(pope_world, tmp_path):  # noqa: F811
    def key(model="tiny-llava", methods=("vcd",), params=None, data=pope_world, **kw):
        (plan,) = halluc.api.plan_runs(model, list(methods), ["pope"], small(data, tmp_path / "x", **kw),
                                       **(params or {}))
        runner = Runner(plan.spec, None, plan.out)
        sample = plan.spec.task.samples("random")[0]
        return runner._cache_key(plan.spec.entries[-1], sample, runner._decoding())

    base = key()
    changed_image = copy_data(pope_world, tmp_path / "img")
    images = tmp_path / "img" / "images"
    shutil.copytree(pope_world[1], images)
    from PIL import Image

    for path in images.glob("*.png"):
        with Image.open(path) as img:
            rotated = img.rotate(90)
        rotated.save(path)
    variants = {"model": key(model="tiny-llava-next"), "weights": key(seed=1), "dtype": key(dtype="bfloat16"),
                "methods": key(params={"vcd.alpha": 2}), "decoding": key(protocol="opera"),
                "max_new_tokens": key(max_new_tokens=3), "prompt": key(protocol="vcd"),
                "image": key(data=(changed_image[0], images))}
    assert len({base, *variants.values()}) == len(variants) + 1
    # labels, splits and limit decide no output: the cache is shared across them
    flipped = copy_data(pope_world, tmp_path / "flip", flip_labels=True)
    assert key(data=flipped) == key(limit=1) == key(splits=("random", "popular")) == base


@pytest.mark.parametrize("field", [f for f in ident.FIELDS if f != "methods"])
def test_the_report_refuses_runs_of_two_identities_for_every_field(field):
    rows = fake_rows("llava", "pope", ("none", "vcd"))
    other = fake_rows("llava", "pope", ("none", "vhr"))
    first = Run(Path("a"), {"identity": RECORD}, rows)
    build_report([first, Run(Path("b"), {"identity": {**RECORD, "methods": []}}, other)])  # methods may differ
    with pytest.raises(HallucError, match=rf"a and b both hold llava on pope llava but are not the same run: "
                                          rf"{field} \(.*\) differ"):
        build_report([first, Run(Path("b"), {"identity": {**RECORD, field: CHANGED[field]}}, other)])


def test_the_line_names_what_differs_inside_a_field():
    vcd = lambda alpha: [{"label": "none", "params": {"none": {}}},  # noqa: E731
                         {"label": "vcd", "params": {"vcd": {"alpha": alpha}}}]
    assert ident.describe_differences({"methods": vcd(1.0)}, {"methods": vcd(2.0)}, ["methods"]) == \
        "methods (parameters of vcd)"
    assert ident.describe_differences({"methods": vcd(1.0)}, {"methods": vcd(1.0)[:1]}, ["methods"]) == \
        'methods (["none", "vcd"] vs ["none"])'
    files = ({"a.json": "1", "b.json": "2"}, {"a.json": "1", "b.json": "3"})
    assert ident.describe_differences({"files": files[0]}, {"files": files[1]}, ["files"]) == "files (b.json)"
