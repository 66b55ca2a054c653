"""A rich progress bar for long reads, shown only on a terminal and only when asked."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _Quiet:
    def advance(self, amount: float = 1) -> None:
        """Nothing to show."""


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task, amount)


@contextmanager
def progress_bar(description: str, total: float | None, enabled: bool) -> Iterator[_Quiet | _Bar]:
    """`bar.advance(n)` as work is done; a bar on stderr when `enabled` and stderr is a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield _Quiet()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        yield _Bar(progress, progress.add_task(description, total=total))
