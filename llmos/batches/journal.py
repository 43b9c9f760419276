"""A batch's checkpoint: the journal of finished input lines, in the job's work folder.

Each finished line is one JSON line ``{"line": N, "ok": bool, "record": {...}}`` (``record`` is the
output or error file's line for it), written whole and fsynced before the next request starts. A
runner killed while writing leaves a torn last line, which opening the journal cuts off: that request
runs again, and appears once. The output and error files are made from the journal at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmos.batches.spec import BatchCounts


class Journal:
    """Open for appending; ``done`` holds the input lines already finished (line number -> ok)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[int, bool] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        self._load()
        self._fh = open(path, "ab")

    def _load(self) -> None:
        good = 0  # bytes of whole, readable lines
        with open(self.path, "rb") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break
                try:
                    entry = json.loads(raw)
                    self.done[int(entry["line"])] = bool(entry["ok"])
                except (ValueError, KeyError, TypeError):
                    break
                good += len(raw)
        if good < self.path.stat().st_size:
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
                os.fsync(fh.fileno())

    def append(self, line: int, ok: bool, record: dict[str, Any]) -> None:
        data = json.dumps({"line": line, "ok": ok, "record": record}, ensure_ascii=False).encode("utf-8") + b"\n"
        self._fh.write(data)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.done[line] = ok

    def counts(self, total: int) -> BatchCounts:
        completed = sum(1 for ok in self.done.values() if ok)
        return BatchCounts(total=total, completed=completed, failed=len(self.done) - completed)

    def records(self) -> Iterator[tuple[bool, dict[str, Any]]]:
        """(ok, record) of every finished line, in the order they finished."""
        self._fh.flush()
        with open(self.path, "rb") as fh:
            for raw in fh:
                entry = json.loads(raw)
                yield bool(entry["ok"]), entry["record"]

    def close(self) -> None:
        self._fh.close()
