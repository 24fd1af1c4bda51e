"""The dynamic batcher: grouping by key, the size cap, the wait, the queue cap, failures per batch, and a
shutdown that finishes queued work. Also the server's option checks and its import boundary."""
from __future__ import annotations

import ast
import asyncio
import threading
import time
from pathlib import Path

import pytest

from halluc.errors import HallucError
from halluc.serve.batcher import Batcher, QueueFull, Stopped
from halluc.serve.options import ServeOptions


class Recorder:
    """run_batch that records each batch's payloads; it can hold the worker until released."""

    def __init__(self, hold: bool = False):
        self.batches: list[list] = []
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, payloads):
        self.release.wait(10)
        self.batches.append(list(payloads))
        return [ValueError(f"bad {p}") if p == "bad" else p * 2 for p in payloads]


async def submit_all(batcher, jobs, gap=0.0):
    tasks = []
    for key, payload in jobs:
        tasks.append(asyncio.ensure_future(batcher.submit(key, payload)))
        await asyncio.sleep(gap)
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_requests_group_by_key_up_to_the_batch_size():
    run = Recorder()
    batcher = Batcher(run, max_batch_size=3, max_wait_s=0.3, max_queue=100)
    batcher.start()
    jobs = [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("a", 5), ("b", 6)]
    results = asyncio.run(submit_all(batcher, jobs))
    batcher.stop()
    assert results == [2, 4, 6, 8, 10, 12]
    assert sorted(map(sorted, run.batches)) == [[1, 3, 4], [2, 6], [5]]  # never mixes keys, never over 3


def test_a_lone_request_waits_at_most_max_wait():
    batcher = Batcher(Recorder(), max_batch_size=8, max_wait_s=0.05, max_queue=10)
    batcher.start()
    start = time.monotonic()
    assert asyncio.run(submit_all(batcher, [("a", 1)])) == [2]
    batcher.stop()
    assert time.monotonic() - start < 2


def test_a_failure_reaches_only_its_own_request():
    run = Recorder()
    batcher = Batcher(run, max_batch_size=4, max_wait_s=0.2, max_queue=10)
    batcher.start()
    results = asyncio.run(submit_all(batcher, [("a", 1), ("a", "bad"), ("a", 3)]))
    batcher.stop()
    assert results[0] == 2 and results[2] == 6 and isinstance(results[1], ValueError)


def test_a_crashing_batch_fails_its_requests_and_the_worker_goes_on():
    calls = []

    def run(payloads):
        calls.append(payloads)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return list(payloads)

    batcher = Batcher(run, max_batch_size=4, max_wait_s=0.01, max_queue=10)
    batcher.start()
    first = asyncio.run(submit_all(batcher, [("a", 1)]))
    second = asyncio.run(submit_all(batcher, [("a", 2)]))
    batcher.stop()
    assert isinstance(first[0], RuntimeError) and second == [2]


def test_a_full_queue_refuses_and_a_stopping_batcher_finishes_its_queue():
    run = Recorder(hold=True)
    batcher = Batcher(run, max_batch_size=1, max_wait_s=0.0, max_queue=2)
    batcher.start()

    async def scenario():
        first = asyncio.ensure_future(batcher.submit("a", 1))
        second = asyncio.ensure_future(batcher.submit("a", 2))
        await asyncio.sleep(0.1)
        with pytest.raises(QueueFull):
            await batcher.submit("a", 3)
        stopper = threading.Thread(target=batcher.stop)
        stopper.start()  # stop while both are queued or running: they still finish
        await asyncio.sleep(0.1)
        with pytest.raises(Stopped):
            await batcher.submit("a", 4)
        run.release.set()
        results = await asyncio.gather(first, second)
        await asyncio.to_thread(stopper.join, 10)
        return results

    assert asyncio.run(scenario()) == [2, 4]
    assert not batcher.thread.is_alive()


@pytest.mark.parametrize("bad", [dict(max_batch_size=0), dict(max_tokens=-1), dict(max_wait_ms=float("nan")),
                                 dict(default_max_tokens=300, max_tokens=200), dict(port=70000),
                                 dict(served_name="a+b"), dict(api_key=" "), dict(image_dir=Path("/no/such/dir")),
                                 dict(max_queue=True)])
def test_bad_options_are_one_line(bad):
    with pytest.raises(HallucError):
        ServeOptions(**bad)


def test_loopback_is_the_default():
    assert ServeOptions().host == "127.0.0.1" and ServeOptions().loopback
    assert ServeOptions(host="::1").loopback and not ServeOptions(host="0.0.0.0").loopback


def test_the_server_imports_only_the_api_and_the_base_modules():
    package = Path(__file__).resolve().parents[2] / "halluc" / "serve"
    allowed = {"halluc.api", "halluc.errors"}
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                if name.startswith("halluc") and name not in allowed and not name.startswith("halluc.serve"):
                    if name == "halluc":
                        assert all(a.name == "api" for a in node.names), f"{path.name}: from halluc import ..."
                    else:
                        raise AssertionError(f"{path.name} imports {name}")
