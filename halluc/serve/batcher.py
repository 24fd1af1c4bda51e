"""Dynamic batching: requests that can share a batch (same methods, parameters and decoding) wait up to
`max_wait` for each other, then run as one `generate` call on the model's single worker thread."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("halluc.serve")


class QueueFull(Exception):
    """More requests are waiting than the server accepts."""


class Stopped(Exception):
    """The server is shutting down and takes no new work."""


@dataclass(eq=False)
class Job:
    """One request's work: `key` says which requests may share its batch."""

    key: Hashable
    payload: Any
    future: asyncio.Future = field(repr=False)
    loop: asyncio.AbstractEventLoop = field(repr=False)
    arrived: float = field(default_factory=time.monotonic)

    def finish(self, result: Any) -> None:
        """Hand the result (or an exception) to the waiting request, if it still waits."""
        def deliver():
            if self.future.done():  # the client went away
                return
            if isinstance(result, BaseException):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)
        try:
            self.loop.call_soon_threadsafe(deliver)
        except RuntimeError:  # the event loop is closed: nobody is waiting
            pass


class Batcher:
    """Collects jobs and runs `run_batch(payloads) -> results` (one per payload, a result or an exception) on
    one worker thread. The oldest job's key is served first; a batch closes when it holds `max_batch_size`
    jobs or when its oldest job has waited `max_wait_s`."""

    def __init__(self, run_batch: Callable[[Sequence[Any]], list[Any]], *, max_batch_size: int, max_wait_s: float,
                 max_queue: int):
        self.run_batch, self.max_batch_size, self.max_wait_s, self.max_queue = \
            run_batch, max_batch_size, max_wait_s, max_queue
        self.pending: list[Job] = []
        self.running = 0
        self.batches = 0  # batches run so far (the tests and /health read it)
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._work, name="halluc-serve-batcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Take no new jobs, finish the queued ones, and end the worker."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join(timeout)

    @property
    def load(self) -> int:
        """Jobs waiting or running."""
        return len(self.pending) + self.running

    async def submit(self, key: Hashable, payload: Any) -> Any:
        loop = asyncio.get_running_loop()
        job = Job(key, payload, loop.create_future(), loop)
        with self.cond:
            if self.stopping:
                raise Stopped()
            if self.load >= self.max_queue:
                raise QueueFull()
            self.pending.append(job)
            self.cond.notify_all()
        return await job.future

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                results = self.run_batch([job.payload for job in batch])
            except Exception as err:  # run_batch answers per job; this is a fault of its own
                log.exception("batch of %d failed", len(batch))
                results = [err] * len(batch)
            with self.cond:  # counted before any answer leaves, so a client that has its answer sees the count
                self.running = 0
                self.batches += 1
            for job, result in zip(batch, results):
                job.finish(result)

    def _next_batch(self) -> list[Job] | None:
        with self.cond:
            while not self.pending:
                if self.stopping:
                    return None
                self.cond.wait()
            first = self.pending[0]
            while True:
                same = [job for job in self.pending if job.key == first.key]
                left = first.arrived + self.max_wait_s - time.monotonic()
                if len(same) >= self.max_batch_size or left <= 0 or self.stopping:
                    break
                self.cond.wait(left)
            batch = same[:self.max_batch_size]
            taken = set(map(id, batch))
            self.pending = [job for job in self.pending if id(job) not in taken]
            self.running = len(batch)
            return batch
