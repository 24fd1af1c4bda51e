"""Cost columns mean the same at any --limit: each configuration's first batch runs once untimed.

The first calls of a process and of a method pay one-time costs. Timed, they fell on vanilla (it runs
first), so at a small --limit every method looked cheaper than vanilla (VCD 0.25×). These tests run the
toy world's POPE with toy-llava under a clock that the model calls advance by a known cost model: a
large cost on the process's first call, a smaller one on each method's first call, and a fixed cost per
sample. Real timings on a shared machine are too noisy to test against; this clock is exact.
"""
from __future__ import annotations

import json
import time
import types

import pytest

import halluc
from halluc.evaluation import run as run_module
from halluc.evaluation.run import WARM_UP_TOKENS, RunOptions

PROCESS_WARM_UP, METHOD_WARM_UP = 10.0, 1.0       # seconds on the fake clock
PER_SAMPLE = {"none": 0.02, "vcd": 0.05}           # vcd: 2.5x vanilla


@pytest.fixture(scope="module")
def data_home(tmp_path_factory):
    """The toy world's benchmarks, rendered once for the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HALLUC_DATA", str(tmp_path_factory.mktemp("data")))
        patch.setenv("HALLUC_PROGRESS", "0")
        yield


class FakeClock:
    """`generate` as the run module calls it, advancing a clock by the cost model (a fresh process)."""

    def __init__(self):
        self.now = 0.0
        self.calls: list[tuple[str, int, int]] = []   # (configuration, batch size, max_new_tokens)
        self.real = run_module.generate

    def perf_counter(self) -> float:
        return self.now

    def generate(self, lvlm, images, prompts, methods, decoding, **kwargs):
        label = "+".join(m.name for m in methods)
        seen = {c[0] for c in self.calls}
        self.now += (PROCESS_WARM_UP if not self.calls else 0.0) + (METHOD_WARM_UP if label not in seen else 0.0)
        self.now += PER_SAMPLE[label] * len(images)
        self.calls.append((label, len(images), decoding.max_new_tokens))
        return self.real(lvlm, images, prompts, methods, decoding=decoding, **kwargs)


def fake_run(monkeypatch, out, **options):
    clock = FakeClock()
    monkeypatch.setattr(run_module, "generate", clock.generate)
    monkeypatch.setattr(run_module, "time", types.SimpleNamespace(perf_counter=clock.perf_counter,
                                                                 monotonic=time.monotonic, sleep=time.sleep))
    options = {"batch_size": 2, "splits": ("random",), **options}
    _, rows = halluc.run("toy-llava", ["vcd"], "pope", RunOptions(dataset="world", out=out, device="cpu", **options))
    return clock, rows


def seconds(rows, method, split):
    return next(r["seconds_per_sample"] for r in rows if r["method"] == method and r["split"] == split)


@pytest.mark.parametrize("limit", [1, 3])
def test_cost_ratios_do_not_depend_on_the_limit(data_home, monkeypatch, tmp_path, limit):
    _, rows = fake_run(monkeypatch, tmp_path / "run", limit=limit, splits=("random", "popular"))
    for split in ("random", "popular"):
        assert seconds(rows, "none", split) == pytest.approx(PER_SAMPLE["none"])  # before: 11.02 s at limit 1
        assert seconds(rows, "vcd", split) == pytest.approx(PER_SAMPLE["vcd"])    # before: 1.05 s
    ratio = seconds(rows, "vcd", "random") / seconds(rows, "none", "random")
    assert ratio == pytest.approx(2.5)   # before: 0.095 at limit 1, 0.10 at limit 3


def test_the_warm_up_is_one_short_untimed_batch_per_configuration(data_home, monkeypatch, tmp_path):
    clock, rows = fake_run(monkeypatch, tmp_path / "run", limit=3)
    warm_ups = [c for c in clock.calls if c[2] == WARM_UP_TOKENS]
    assert warm_ups == [("none", 2, WARM_UP_TOKENS), ("vcd", 2, WARM_UP_TOKENS)]   # each first batch, once
    assert [c[:2] for c in clock.calls] == [("none", 2), ("none", 2), ("none", 1), ("vcd", 2), ("vcd", 2), ("vcd", 1)]
    logged = [json.loads(line) for p in sorted((tmp_path / "run" / "samples").glob("*/*.jsonl"))
              for line in p.read_text().splitlines()]
    assert len(logged) == 2 * 3   # the warm-up's outputs are not samples


def test_the_warm_up_changes_no_answer(data_home, tmp_path, monkeypatch):
    _, warmed = halluc.run("toy-llava", ["vcd"], "pope", RunOptions(dataset="world", out=tmp_path / "a",
                                                                    device="cpu", limit=3, batch_size=2,
                                                                    splits=("random",)))
    monkeypatch.setattr(run_module.Runner, "_warm_up", lambda *args: None)
    _, cold = halluc.run("toy-llava", ["vcd"], "pope", RunOptions(dataset="world", out=tmp_path / "b",
                                                                  device="cpu", limit=3, batch_size=2,
                                                                  splits=("random",)))
    timing = {"seconds_per_sample", "tokens_per_second", "peak_memory_mb"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in warmed] == \
           [{k: v for k, v in r.items() if k not in timing} for r in cold]
    texts = lambda out: {p.relative_to(out): [json.loads(x)["text"] for x in p.read_text().splitlines()]  # noqa: E731
                         for p in sorted(out.glob("samples/*/*.jsonl"))}
    assert texts(tmp_path / "a") == texts(tmp_path / "b")


def test_nothing_to_generate_needs_no_warm_up(data_home, monkeypatch, tmp_path):
    fake_run(monkeypatch, tmp_path / "run", limit=1)
    clock, _ = fake_run(monkeypatch, tmp_path / "run", limit=1, resume=True)
    assert clock.calls == []
    cache = tmp_path / "cache"
    fake_run(monkeypatch, tmp_path / "a", limit=1, cache_dir=cache)
    clock, rows = fake_run(monkeypatch, tmp_path / "b", limit=1, cache_dir=cache)
    assert clock.calls == [] and all(r["seconds_per_sample"] is None for r in rows)
