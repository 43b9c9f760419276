"""A tuning job's trials as ``train`` jobs: queue one, watch it, prune it, and read how it ended.

Each trial is an ordinary ``train`` job (visible in ``llmos jobs``, with its own progress, log, pause
and cancel) whose spec carries a ``trial`` link, so it keeps its result in its work folder instead of
registering it. The training loop already records every validation as an ``eval`` event
(``JobCallback.on_evaluate``); the tuning job reads those events, reports the k-th validation's metric
to Optuna as intermediate value k (so runs with different batch sizes compare at the same epoch), and
stops a trial Optuna prunes by asking its job to cancel, which the loop's pause point obeys at the
next step. No second training loop, and no Optuna inside the trial.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmos.jobs.context import JobStop
from llmos.jobs.submit import queue_job
from llmos.jobs.types import Control, JobInfo, JobPaths, JobState
from llmos.train.results import TrialResult

if TYPE_CHECKING:
    from llmos.jobs.context import JobContext
    from llmos.jobs.store import JobStore

TRIAL_KIND = "train"
PRUNED = "pruned by its tuning job"


@dataclass
class TrialEnd:
    """How a trial's job ended, in the terms the study records."""

    state: str  # "complete", "pruned" or "fail"
    value: float | None = None
    job: JobInfo | None = None
    error: str | None = None
    intermediate: dict[int, float] = field(default_factory=dict)


class TrialJobs:
    """Queues and watches the trial jobs of one tuning job (running in that job's runner)."""

    def __init__(self, ctx: "JobContext", metric: str, poll: float | None = None) -> None:
        self.ctx = ctx
        self.jobs: JobStore = ctx.jobs
        self.metric = metric
        self.poll = poll if poll is not None else max(ctx.settings.job_poll_interval, 0.1)

    def submit(self, spec: dict[str, Any]) -> str:
        """Queue a trial's ``train`` job (the daemon's supervisor starts it, as any queued job)."""
        return queue_job(self.jobs, TRIAL_KIND, spec, spec.get("tenant", "default"))

    def follow(self, job_id: str, trial: Any | None) -> TrialEnd:
        """Wait for the trial's job to end; with ``trial`` (an Optuna trial) report and prune on the way.

        A cancel of the tuning job cancels the trial too; a pause that frees memory (daemon shutdown)
        leaves it to the kernel, which pauses and later resumes both."""
        since, seen, intermediate, pruned = 0, 0, {}, False
        while True:
            try:
                self.ctx.pause_point()
            except JobStop as stop:
                if stop.state == JobState.CANCELLED:
                    self.cancel(job_id, f"its tuning job {self.ctx.job_id} was cancelled")
                raise
            info = self.jobs.get(job_id)
            for event in self.jobs.events(job_id, since):
                since = event.id
                if event.kind != "eval" or self.metric not in event.data:
                    continue
                seen += 1
                intermediate[seen] = float(event.data[self.metric])
                if trial is not None and not pruned and not info.state.final:
                    trial.report(intermediate[seen], seen)
                    if trial.should_prune():
                        pruned = True
                        self.cancel(job_id, f"{PRUNED} {self.ctx.job_id} after validation {seen} "
                                            f"({self.metric} {intermediate[seen]:.4f})")
            if info.state.final:
                return self._ended(info, pruned, intermediate)
            time.sleep(self.poll)

    def _ended(self, info: JobInfo, pruned: bool, intermediate: dict[int, float]) -> TrialEnd:
        shutil.rmtree(JobPaths.of(self.ctx.settings.jobs_dir, info.id).checkpoints, ignore_errors=True)
        result = TrialResult.model_validate(info.result) if info.state == JobState.SUCCEEDED and info.result else None
        if result is not None and result.value is not None:
            return TrialEnd("complete", result.value, info, intermediate=intermediate)
        if info.state == JobState.CANCELLED and pruned:
            return TrialEnd("pruned", None, info, intermediate=intermediate)
        if info.state == JobState.CANCELLED:
            return TrialEnd("fail", None, info, f"cancelled ({info.reason or 'no reason given'})", intermediate)
        error = (info.error or f"ended {info.state.api} without a score").strip().splitlines()
        return TrialEnd("fail", None, info, error[-1] if error else None, intermediate)

    def cancel(self, job_id: str, reason: str) -> None:
        """Cancel a trial's job: at once when no runner holds it, else at its runner's next pause point."""
        info = self.jobs.get(job_id)
        if info.state.final:
            return
        if info.pid is None and self.jobs.transition(job_id, JobState.CANCELLED,
                                                     sources=[JobState.QUEUED, JobState.PAUSED],
                                                     control={"reason": reason}, data={"reason": reason}):
            return
        self.jobs.request(job_id, Control.CANCEL, reason)

    def discard(self, job_id: str) -> None:
        """Remove a finished trial's result folder (its model was not promoted)."""
        shutil.rmtree(JobPaths.of(self.ctx.settings.jobs_dir, job_id).work / "result", ignore_errors=True)
