"""Progress of long runs: a rich progress bar on a terminal, nothing otherwise (cron, containers,
`--json`). Thread-safe: table copies report from several threads."""

from __future__ import annotations

import sys
import threading


class Reporter:
    """The silent reporter; the interface every reporter has."""

    def add_total(self, nbytes: int) -> None:
        """More work is known (bytes expected)."""

    def advance(self, nbytes: int) -> None:
        """Bytes done."""

    def status(self, text: str) -> None:
        """What is happening now."""

    def close(self) -> None:
        """Stop drawing."""


class RichReporter(Reporter):
    def __init__(self, description: str):
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeElapsedColumn(), transient=True,
        )
        self._lock = threading.Lock()
        self._description = description
        self._task = self._progress.add_task(description, total=0)
        self._progress.start()

    def add_total(self, nbytes: int) -> None:
        with self._lock:
            task = self._progress.tasks[0]
            self._progress.update(self._task, total=(task.total or 0) + nbytes)

    def advance(self, nbytes: int) -> None:
        self._progress.advance(self._task, nbytes)

    def status(self, text: str) -> None:
        self._progress.update(self._task, description=f"{self._description}: {text}")

    def close(self) -> None:
        self._progress.stop()


def reporter_for(description: str, *, enabled: bool | None = None) -> Reporter:
    """A rich reporter when stdout is a terminal (or `enabled`), else the silent one."""
    if enabled is None:
        enabled = sys.stdout.isatty()
    return RichReporter(description) if enabled else Reporter()
