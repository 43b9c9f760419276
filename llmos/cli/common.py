"""Shared CLI pieces: consoles, opening the runtime with visible progress, byte formatting."""

from __future__ import annotations

import json
import logging
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn, DownloadColumn, MofNCompleteColumn, Progress as RichBar, SpinnerColumn, TextColumn, TimeElapsedColumn,
    TransferSpeedColumn,
)

from llmos.config import load_settings
from llmos.runtime import Runtime, open_runtime
from llmos.store.progress import Progress

console = Console()
err = Console(stderr=True)


class RichProgress(Progress):
    """Shows store work on stderr: a byte bar for copies, a count for item-by-item work, a spinner for conversions."""

    def __init__(self) -> None:
        self._bar: RichBar | None = None
        self._task: Any = None

    def start(self, description: str, total: int | None, unit: str = "bytes") -> None:
        self.finish()
        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if total is not None and unit == "bytes":
            columns += [BarColumn(), DownloadColumn(), TransferSpeedColumn()]
        elif total is not None:  # items: "12/272 tensors"
            columns += [BarColumn(), MofNCompleteColumn(), TextColumn(unit)]
        columns.append(TimeElapsedColumn())
        self._bar = RichBar(*columns, console=err, transient=False)
        self._bar.start()
        self._task = self._bar.add_task(description, total=total)

    def advance(self, amount: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, amount)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def runtime(*, builtins: bool | None = None) -> Runtime:
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = load_settings()
    return open_runtime(settings, builtins=builtins, progress_for=lambda name: RichProgress())


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def print_json(data: object) -> None:
    console.print_json(json.dumps(data, default=str))
