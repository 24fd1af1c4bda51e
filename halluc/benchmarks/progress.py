"""A progress bar with ETA on stderr (rich), quiet when stderr is not a terminal and HALLUC_PROGRESS=0."""
from __future__ import annotations

import contextlib
import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class _Bar:
    def __init__(self, progress, task_id):
        self.progress, self.task_id = progress, task_id

    def advance(self, n: int = 1) -> None:
        if self.progress is not None:
            self.progress.advance(self.task_id, n)


@contextlib.contextmanager
def progress_bar(label: str, total: int, done: int = 0):
    if os.environ.get("HALLUC_PROGRESS", "1") == "0":
        yield _Bar(None, None)
        return
    console = Console(file=sys.stderr)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
               TimeRemainingColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        yield _Bar(progress, progress.add_task(label, total=total, completed=done))
