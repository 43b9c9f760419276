"""What a background job is: its states and their transitions, control requests, and typed records.

Everything here is plain data shared by the daemon side (``jobs.JobRunner``) and the runner process
(``jobproc`` / ``jobs_context.JobContext``); neither side passes loose dicts across the boundary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import Any


class JobState(IntEnum):
    """Life cycle of a job. The integer is what the ``jobs.state`` column stores."""

    QUEUED = 0  # waiting for a runner slot (new, resumed after a freeing pause, or recovered)
    RUNNING = 1  # a runner process owns it
    PAUSED = 2  # stopped at a pause point: its process waits (holds memory) or has exited (pid is None)
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def final(self) -> bool:
        return self >= JobState.SUCCEEDED

    @property
    def api(self) -> str:
        return API_STATES[self]

    @classmethod
    def from_api(cls, name: str) -> "JobState":
        for state, text in API_STATES.items():
            if text == name:
                return state
        raise ValueError(f"unknown job state {name!r}; known: {', '.join(API_STATES.values())}")


API_STATES: dict[JobState, str] = {
    JobState.QUEUED: "queued",
    JobState.RUNNING: "running",
    JobState.PAUSED: "paused",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}
"""The state names the API, CLI and events use (stable: clients switch on them)."""

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # QUEUED -> PAUSED: a user may hold a job before it starts.
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.PAUSED, JobState.CANCELLED}),
    # RUNNING -> QUEUED: the runner vanished while the daemon was down; it restarts from its checkpoint.
    JobState.RUNNING: frozenset({JobState.PAUSED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED,
                                 JobState.QUEUED}),
    # PAUSED -> QUEUED: resuming a job whose process exited (freed memory) needs a new runner and a slot.
    JobState.PAUSED: frozenset({JobState.RUNNING, JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED,
                                JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def sources_of(target: JobState) -> frozenset[JobState]:
    """The states from which ``target`` may be entered."""
    return frozenset(s for s, allowed in TRANSITIONS.items() if target in allowed)


class Control(IntEnum):
    """What the daemon asks of a runner (the ``job_control.requested`` column).

    Ordered by severity: when two requests meet (a SIGTERM and a database request), the larger wins.
    """

    NONE = 0  # run (also: "resume" clears a request to this)
    PAUSE = 1  # stop at the next pause point and wait in place, memory kept; resumes in well under a second
    PAUSE_FREE = 2  # stop at the next pause point, save a checkpoint, exit; a resume starts a new runner
    CANCEL = 3  # stop at the next pause point and exit; no checkpoint

    @property
    def api(self) -> str | None:
        return None if self is Control.NONE else self.name.lower()


USER_REASON = "user"
"""Pause reason of a person's pause; such jobs stay paused across daemon restarts."""
SHUTDOWN_REASON = "shutdown"
"""Pause reason when the daemon (or the runner, on SIGTERM) stops; a restarted daemon resumes them."""


@dataclass
class JobProgress:
    """The latest progress of a job: where it is and how fast it goes (ETA from step timing)."""

    step: int = 0
    total: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    eta_s: float | None = None
    steps_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "JobProgress":
        data = data or {}
        return cls(step=int(data.get("step", 0)), total=data.get("total"), metrics=dict(data.get("metrics") or {}),
                   eta_s=data.get("eta_s"), steps_per_s=data.get("steps_per_s"))


@dataclass
class JobInfo:
    """One job as the daemon and its clients see it."""

    id: str
    kind: str
    state: JobState
    tenant: str
    spec: dict[str, Any]
    progress: JobProgress
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    result_model: str | None = None
    requested: Control = Control.NONE
    reason: str | None = None  # why the last control request (pause, cancel) was made
    checkpoint: str | None = None
    pid: int | None = None
    pid_started: float | None = None
    attempts: int = 0


@dataclass
class JobEventInfo:
    """One row of a job's event history. ``id`` grows monotonically: use it as the ``since`` cursor."""

    id: int
    job_id: str
    at: datetime
    kind: str  # "state", "progress", "control", "checkpoint", or a job kind's own event name
    data: dict[str, Any]


@dataclass(frozen=True)
class JobPaths:
    """A job's folder under the llmos home: ``jobs/<id>/{runner.log, launch.json, checkpoints/, work/}``."""

    root: Path

    @classmethod
    def of(cls, jobs_dir: Path, job_id: str) -> "JobPaths":
        return cls(jobs_dir / job_id)

    @property
    def log(self) -> Path:
        return self.root / "runner.log"

    @property
    def launch(self) -> Path:
        return self.root / "launch.json"

    @property
    def freeze_lock(self) -> Path:
        return self.root / "freeze.lock"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def create(self) -> "JobPaths":
        for d in (self.root, self.checkpoints, self.work):
            d.mkdir(parents=True, exist_ok=True)
        return self
