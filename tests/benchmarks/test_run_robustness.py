"""What an outside audit broke in `halluc run`, each fixed: damaged sample logs, bad option values, work
refused before it starts, two processes on one run, read-only storage, a full disk, progress in logs."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

import halluc
from halluc.errors import HallucError
from halluc.evaluation.run import RunOptions, SampleLog, Shard, read_outputs, run_lock
from halluc.evaluation.store import CorruptLog
from tests.benchmarks.test_run import options, pope_world  # noqa: F401  (fixture)

TIMING = {"seconds_per_sample", "tokens_per_second", "peak_memory_mb"}


def scores(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def small(pope_world, out, **kw):  # noqa: F811
    return options(pope_world, out, max_new_tokens=2, splits=("random",), **kw)


def log_of(out: Path, method: str = "none") -> SampleLog:
    folder = next(p for p in (out / "samples").iterdir() if p.name.startswith(method))
    return SampleLog(folder / "random.jsonl")


def test_a_damaged_middle_line_is_named_and_repaired_on_resume(pope_world, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    _, rows = halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out))
    log = log_of(out)
    lines = log.path.read_text().splitlines()
    lines[3] = lines[3][:20]  # a damaged line in the middle
    log.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptLog, match=r"random.jsonl: line 4 is damaged.*--resume` repairs"):
        read_outputs(out, log.path.parent.name, "random")
    _, resumed = halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, resume=True))
    assert scores(resumed) == scores(rows)  # the damaged sample was generated again, nothing counted missing
    assert len(log.read()) == len(lines) and len(log.path.read_text().splitlines()) == len(lines)


def test_a_torn_last_line_is_not_an_error(tmp_path):
    log = SampleLog(tmp_path / "x.jsonl")
    log.append({"id": "a", "text": "yes"})
    with log.path.open("a") as f:
        f.write('{"id": "b", "te')
    assert list(log.read()) == ["a"]
    log.append({"id": "c", "text": "no"})
    assert list(log.read()) == ["a", "c"]


def test_a_full_disk_leaves_nothing_half_written(tmp_path, monkeypatch):
    log = SampleLog(tmp_path / "x.jsonl")
    log.append({"id": "a", "text": "yes"})
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(HallucError, match="no space left on the device while writing .*--resume"):
        log.append({"id": "b", "text": "no"})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert list(log.read()) == ["a"] and log.path.read_text().endswith("\n")


@pytest.mark.parametrize("field,value,message", [
    ("batch_size", 0, "--batch-size must be an integer >= 1"),
    ("limit", -1, "--limit must be an integer >= 1"),
    ("limit", 0, "--limit must be an integer >= 1"),
    ("max_new_tokens", 0, "--max-new-tokens must be an integer >= 1"),
    ("max_new_tokens", 2.5, "--max-new-tokens must be an integer >= 1"),
])
def test_bad_option_values_are_refused(field, value, message):
    with pytest.raises(HallucError, match=message):
        RunOptions(**{field: value})


def test_a_method_listed_twice_is_refused(pope_world, tmp_path):  # noqa: F811
    with pytest.raises(HallucError, match="method 'vcd' is listed twice"):
        halluc.run("tiny-llava", ["vcd", "vcd"], "pope", small(pope_world, tmp_path / "run"))


@pytest.mark.parametrize("methods,benchmarks,message", [
    (["vcd"], ["pope", "popee"], "unknown benchmark 'popee'"),
    (["vhr+opera"], ["pope"], "'vhr' cannot be stacked with 'opera'"),
    (["cca"], ["pope"], None),  # supported: runs
])
def test_every_benchmark_and_stack_is_checked_before_any_work(pope_world, tmp_path, methods, benchmarks,  # noqa: F811
                                                              message):
    out = tmp_path / "run"
    if message is None:
        halluc.api.plan_runs("tiny-llava", methods, benchmarks, small(pope_world, out))
        return
    with pytest.raises(HallucError, match=message):
        halluc.api.run_benchmarks("tiny-llava", methods, benchmarks, small(pope_world, out))
    assert not out.exists()  # nothing was generated, not even vanilla


def test_a_second_process_on_the_same_run_is_refused(tmp_path):
    out = tmp_path / "run"
    with run_lock(out, Shard()):
        with pytest.raises(HallucError, match="in use by another halluc process"):
            with run_lock(out, Shard()):
                pass
        with run_lock(out, Shard(1, 2)):  # another shard of the same run is fine
            pass
    with run_lock(out, Shard()):  # released after the run
        pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_a_finished_run_resumes_on_read_only_storage(pope_world, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    _, rows = halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out))
    for path in [out, *out.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        _, again = halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, resume=True))
    finally:
        for path in [out, *out.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert again == rows


def test_a_finished_run_resumed_rewrites_nothing(pope_world, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    _, rows = halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}
    _, again = halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, resume=True))
    assert again == rows and {p: p.stat().st_mtime_ns for p in out.rglob("*.json")} == before


def test_out_must_be_a_usable_directory(pope_world, tmp_path):  # noqa: F811
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(HallucError, match="is a file, not a directory"):
        halluc.run("tiny-llava", ["none"], "pope", small(pope_world, file))
    with pytest.raises(HallucError, match="is a file, not a directory"):
        halluc.run("tiny-llava", ["none"], "pope", small(pope_world, file / "sub"))


def test_progress_in_a_log_prints_plain_lines_and_the_plan(pope_world, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("HALLUC_PROGRESS", "plain")
    monkeypatch.setenv("HALLUC_PROGRESS_EVERY", "0")
    seen = []
    halluc.api.run_benchmarks("tiny-llava", ["vcd"], ["pope"], small(pope_world, tmp_path / "run"),
                              on_plan=lambda plans, total, done: seen.append((total, done)))
    err = capsys.readouterr().err
    assert seen == [(24, 0)]  # 2 configurations x 12 samples
    assert "[halluc run tiny-llava] vcd · pope random" in err and "/24 generations" in err and "ETA" in err
    assert "(100%)" in err


def test_a_finished_run_resumes_when_every_write_fails_read_only(pope_world, tmp_path, monkeypatch):  # noqa: F811
    """Root ignores permission bits, so the read-only file system is simulated: every write raises EROFS."""
    import builtins

    from halluc.evaluation import run as run_module

    out = tmp_path / "run"
    _, rows = halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out))

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    real_open = builtins.open
    monkeypatch.setattr(run_module, "write_json_atomic", read_only)
    monkeypatch.setattr(run_module, "open", lambda f, mode="r", *a, **k: read_only() if set(mode) & set("wa+")
                        else real_open(f, mode, *a, **k), raising=False)
    _, again = halluc.run("tiny-llava", ["none"], "pope", small(pope_world, out, resume=True))
    assert again == rows
