"""Fine-tune job kinds that stop at a point of the real training loop the test chooses, so the test
acts (pauses, kills) at a step it knows was reached instead of in a window it guesses. They wrap the
real ``train`` kind; a runner imports this module itself (a job kind's entry travels as a string).

* ``train_held_at``: ``spec["hold_at"]`` lists steps where the job waits, still passing its pause
  points (a pause or a cancel works there), until the test calls ``release(work_dir, step)``.
* ``train_held_in_checkpoint``: stops for good in the middle of writing its second checkpoint (the
  model's weights are in the temp folder, the optimizer state not yet) and waits to be killed; a
  daemon started with ``--kind train=tests.heldjobs:train_held_in_checkpoint`` runs its fine-tunes so.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

from llmos.jobs.context import JobContext

HELD = "held"  # a file in the job's work folder: the runner stopped inside its checkpoint and waits
POLL_S = 0.05


def held_marker(jobs_dir: Path, job_id: str) -> Path:
    return jobs_dir / job_id / "work" / HELD


def release(work_dir: Path, step: int) -> None:
    """Let a ``train_held_at`` job go on past ``step`` (this attempt and any later one)."""
    (work_dir / f"release-{step}").touch()


class _HeldAt:
    """The job's context, whose pause point waits at the chosen steps until released."""

    def __init__(self, ctx: JobContext, steps: list[int]) -> None:
        self._ctx, self._steps = ctx, set(steps)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def pause_point(self, save_checkpoint: Any = None) -> None:
        self._ctx.pause_point(save_checkpoint)
        step = self._ctx.last_progress.step
        while step in self._steps and not (self._ctx.work_dir / f"release-{step}").exists():
            time.sleep(POLL_S)
            self._ctx.pause_point(save_checkpoint)


def train_held_at(ctx: JobContext, spec: dict[str, Any]) -> dict[str, Any] | None:
    from llmos.train.job import train_job

    spec = dict(spec)
    steps = [int(s) for s in spec.pop("hold_at")]
    return train_job(_HeldAt(ctx, steps), spec)  # type: ignore[arg-type]


def train_held_in_checkpoint(ctx: JobContext, spec: dict[str, Any]) -> dict[str, Any] | None:
    from llmos.train.job import train_job
    from llmos.train.runner import CheckpointingTrainer

    original = CheckpointingTrainer._save_optimizer_and_scheduler  # noqa: SLF001 - the point to stop at
    calls = itertools.count(1)

    def save_optimizer(self: CheckpointingTrainer, folder: str) -> None:
        if next(calls) == 2:
            (ctx.work_dir / HELD).touch()
            threading.Event().wait()
        original(self, folder)

    CheckpointingTrainer._save_optimizer_and_scheduler = save_optimizer  # type: ignore[method-assign]  # noqa: SLF001
    return train_job(ctx, spec)
