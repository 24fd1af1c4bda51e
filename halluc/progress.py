"""Progress of long work on stderr, for people and for logs.

On a terminal: rich bars (the whole job and its current part) with ETA. Anywhere else (a log file,
CI, `nohup`): one plain line every `HALLUC_PROGRESS_EVERY` seconds (default 30) and when a part
finishes, so a long job is never silent. `HALLUC_PROGRESS=0` turns it off, `=plain` forces lines.

    with Progress("halluc run", total=15600) as progress:
        with progress.part("vcd · pope random", total=600, done=120):
            progress.advance()
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, Literal, TextIO


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    def __init__(self, title: str, total: int, done: int = 0, *, unit: str = "", stream: TextIO | None = None,
                 every: float | None = None):
        self.title, self.total, self.done, self.unit = title, total, done, unit
        self.stream = stream or sys.stderr
        setting = os.environ.get("HALLUC_PROGRESS", "1")
        self.mode = "off" if setting == "0" else "plain" if setting == "plain" or not self._tty() else "rich"
        self.every = every if every is not None else float(os.environ.get("HALLUC_PROGRESS_EVERY", "30"))
        self._start = self._last = time.monotonic()
        self._done_at_start = done
        self._part: dict | None = None
        self._rich: Any = None  # a rich.progress.Progress in rich mode (imported only then)

    def _tty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    def __enter__(self) -> Progress:
        if self.mode == "rich":
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[note]}"), TextColumn("ETA"), TimeRemainingColumn(),
                                      TimeElapsedColumn(), console=Console(file=self.stream), transient=False)
            self._rich.__enter__()
            self._overall = self._rich.add_task(self.title, total=self.total, completed=self.done, note="")
        return self

    def __exit__(self, *exc) -> Literal[False]:
        if self._rich is not None:
            self._rich.__exit__(*exc)
        elif self.mode == "plain" and exc[0] is None:
            self._line("done")
        return False

    @contextlib.contextmanager
    def part(self, label: str, total: int, done: int = 0) -> Iterator[Progress]:
        """The current part of the job (one split of one method, one training stage)."""
        self._part = {"label": label, "total": total, "done": done}
        task = self._rich.add_task(f"  {label}", total=total, completed=done, note="") if self._rich else None
        try:
            yield self
        finally:
            if self.mode == "plain":
                self._line(f"{label} finished")
            self._part = None
            if task is not None:
                self._rich.remove_task(task)

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if self._part is not None:
            self._part["done"] += n
        if self._rich is not None:
            self._rich.update(self._overall, advance=n, note=note)
            for task in self._rich.tasks[1:]:
                self._rich.update(task.id, advance=n, note=note)
        elif self.mode == "plain" and time.monotonic() - self._last >= self.every:
            self._line(note)

    def eta(self) -> float | None:
        """Seconds left, from the rate since this progress started (None before any work)."""
        made = self.done - self._done_at_start
        if made <= 0:
            return None
        return (time.monotonic() - self._start) / made * (self.total - self.done)

    def _line(self, note: str = "") -> None:
        self._last = time.monotonic()
        part = ""
        if self._part is not None:
            part = f"{self._part['label']} {self._part['done']}/{self._part['total']} · "
        share = 100 * self.done / self.total if self.total else 100.0
        eta = self.eta()
        tail = f" · ETA {_clock(eta)}" if eta is not None and self.done < self.total else ""
        extra = f" · {note}" if note else ""
        print(f"[{self.title}] {part}{self.done}/{self.total}{' ' + self.unit if self.unit else ''} ({share:.0f}%)"
              f" · {_clock(time.monotonic() - self._start)} elapsed{tail}{extra}", file=self.stream, flush=True)
