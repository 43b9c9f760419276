"""Batch job kinds that stop at a point of the real batch runner the test chooses, so the test acts
(cancels, kills) at a line it knows was reached instead of in a window it guesses. They wrap the real
``batch`` kind; a runner imports this module itself (a job kind's entry travels as a string).

* ``batch_held_after_2``: once the journal holds two lines the runner writes ``held`` in its work
  folder and waits, still passing pause points (a cancel works there), until ``release`` appears.
* ``batch_torn_at_3``: writes the first half of the third journal line, writes ``held`` and waits to be
  killed: a power cut in the middle of a checkpoint write.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from llmos.jobs.context import JobContext

HELD, RELEASE = "held", "release"
POLL_S = 0.05


def held_marker(jobs_dir: Path, job_id: str) -> Path:
    return jobs_dir / job_id / "work" / HELD


def batch_held_after_2(ctx: JobContext, spec: dict[str, Any]) -> Any:
    from llmos.batches.job import batch_job
    from llmos.batches.journal import Journal

    original = Journal.append

    def append(self: Journal, line: int, ok: bool, record: dict[str, Any]) -> None:
        original(self, line, ok, record)
        if len(self.done) == 2:
            (ctx.work_dir / HELD).touch()
            while not (ctx.work_dir / RELEASE).exists():
                ctx.pause_point()
                time.sleep(POLL_S)

    Journal.append = append  # type: ignore[method-assign]
    return batch_job(ctx, spec)


def batch_torn_at_3(ctx: JobContext, spec: dict[str, Any]) -> Any:
    from llmos.batches.job import batch_job
    from llmos.batches.journal import Journal

    original = Journal.append

    def append(self: Journal, line: int, ok: bool, record: dict[str, Any]) -> None:
        if len(self.done) == 2:
            import json

            data = json.dumps({"line": line, "ok": ok, "record": record}).encode()
            self._fh.write(data[:len(data) // 2])  # noqa: SLF001 - the torn write is the point
            self._fh.flush()  # noqa: SLF001
            (ctx.work_dir / HELD).touch()
            threading.Event().wait()  # until the test kills this process
        original(self, line, ok, record)

    Journal.append = append  # type: ignore[method-assign]
    return batch_job(ctx, spec)
