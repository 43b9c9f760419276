"""The runner process: ``python -m llmos.jobs.process <launch.json>`` runs one job attempt.

The daemon has already moved the job to ``running`` and pointed stdout/stderr at the job's log file.
This process calls the job kind's function and records how it ended (succeeded with its result,
paused after a checkpoint, cancelled, failed with the traceback) before exiting; an exit without such
a record (a kill, a crash of the interpreter) is what the daemon's supervisor reports instead.

Exit codes: 0 when the outcome was recorded (even "failed"; the record says why), 1 when the job
raised (the traceback is in the log and the job row), 2 when the launch itself was unusable.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llmos.config import Settings, load_settings
from llmos.db.engine import Database, set_session_guard
from llmos.jobs.freeze import RunnerGuard
from llmos.jobs.context import JobContext, JobStop
from llmos.jobs.store import JobStore
from llmos.jobs.kinds import load_entry
from llmos.jobs.types import SHUTDOWN_REASON, Control, JobPaths, JobState


@dataclass
class Launch:
    """What the daemon hands a runner (a file, not argv or env: the database URL may hold a password)."""

    job_id: str
    entry: str
    settings: dict[str, Any]
    sys_path: list[str] = field(default_factory=list)  # so entries importable in the daemon import here too
    device: str | None = None  # where its memory was reserved: "cpu" or "cuda:N" (None: torch's choice)

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.chmod(0o600)
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> "Launch":
        return cls(**json.loads(path.read_text()))

    @classmethod
    def of(cls, job_id: str, entry: str, settings: Settings, device: str | None = None) -> "Launch":
        return cls(job_id, entry, settings.model_dump(mode="json"), [p for p in sys.path if p], device)

    def pin_device(self) -> None:
        """Show the runner only its device's GPU (none for the host), before torch first touches CUDA."""
        if self.device == "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        elif self.device is not None and self.device.startswith("cuda:"):
            os.environ["CUDA_VISIBLE_DEVICES"] = self.device.split(":", 1)[1]


def run(launch: Launch) -> int:
    settings = load_settings(**launch.settings)
    launch.pin_device()
    sys.path.extend(p for p in launch.sys_path if p not in sys.path)
    _lower_priority(settings.job_cpu_priority if settings.cosched else "normal")
    _bound_threads(settings.job_threads)
    set_session_guard(RunnerGuard(JobPaths.of(settings.jobs_dir, launch.job_id).freeze_lock))
    # No migrations here: the daemon that launched us has brought the schema up to date.
    store = JobStore(Database(settings.database_url))
    info = store.get(launch.job_id)
    if info.state != JobState.RUNNING:
        print(f"job {info.id} is {info.state.api}, not running; nothing to do", flush=True)
        return 0
    ctx = JobContext(store, info, settings)
    _install_sigterm(ctx)
    print(f"runner pid {os.getpid()}: attempt {info.attempts} of job {info.id} ({info.kind} -> {launch.entry})"
          + (f", resuming from {ctx.resume_from}" if ctx.resume_from else ""), flush=True)
    ctx.start()
    try:
        result = load_entry(launch.entry)(ctx, dict(info.spec))
        ctx.close()
        _succeed(store, ctx, result)
    except JobStop as stop:
        ctx.close()
        _stopped(store, ctx, stop)
    except BaseException:  # noqa: BLE001 - anything the job raises is its failure, recorded with the traceback
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        ctx.close()
        store.transition(info.id, JobState.FAILED, sources=[JobState.RUNNING, JobState.PAUSED],
                         job={"error": text}, data={"error": text.strip().splitlines()[-1]}, attempt=ctx.attempt)
        return 1
    return 0


LOW_NICE = 5  # ``low``: below the daemon's request threads (about 3x less CPU weight), not starved by the host
IDLE_FALLBACK_NICE = 19


def _lower_priority(priority: str) -> None:
    """Put this runner below interactive work in the OS's CPU scheduler (``job_cpu_priority``, with
    co-scheduling on; with it off, jobs and requests compete as equals).

    Called before torch starts its thread pool: threads inherit the policy of the thread that creates
    them. Yielding to llmos's own traffic is the co-scheduler's work (it freezes or pauses runners while
    requests run); the OS priority only tilts the rest. Under ``low`` (the default) the runner runs at
    nice 5: a request thread of the daemon outweighs it, yet another busy process on the host does not
    starve it. ``idle`` (Linux SCHED_IDLE) gives it a core only when nothing else on the host wants one:
    the quietest choice for traffic, but a job beside any busy process barely moves. An OS without
    SCHED_IDLE falls back to nice 19.
    """
    if priority == "normal":
        return
    target = LOW_NICE
    if priority == "idle":
        if hasattr(os, "SCHED_IDLE"):
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
                return
            except OSError as exc:
                print(f"SCHED_IDLE refused ({exc}); running at nice 19 instead", flush=True)
        target = IDLE_FALLBACK_NICE
    try:
        os.nice(max(0, target - os.nice(0)))  # only ever lower: raising needs privileges
    except OSError as exc:
        print(f"could not lower the CPU priority ({exc}); running at the daemon's", flush=True)


def _bound_threads(threads: int) -> None:
    """Cap torch's intra-op threads (``job_threads``) so a job leaves cores to interactive requests.

    Set once at start: another process cannot change a running runner's thread pool, and a pause
    already stops the job's compute entirely.
    """
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def _succeed(store: JobStore, ctx: JobContext, result: Any) -> None:
    if isinstance(result, BaseModel):  # a kind's typed result is stored as its JSON form
        result = result.model_dump(mode="json")
    if result is not None and not isinstance(result, dict):
        raise TypeError(f"a job function returns a pydantic model, a dict or None, not {type(result).__name__}")
    json.dumps(result)  # a result that cannot be stored fails the job here, with a traceback
    model = result.get("model") if result else None
    store.transition(ctx.job_id, JobState.SUCCEEDED, sources=[JobState.RUNNING, JobState.PAUSED],
                     job={"result_model": model if isinstance(model, str) else None},
                     control={"result": result}, data={"result": result}, attempt=ctx.attempt)
    print(f"job {ctx.job_id} succeeded", flush=True)


def _stopped(store: JobStore, ctx: JobContext, stop: JobStop) -> None:
    print(f"job {ctx.job_id}: {stop}", flush=True)
    if stop.state is None:
        return
    data = {"reason": stop.reason, "step": ctx.last_progress.step}
    if stop.state == JobState.PAUSED and ctx.paused:
        # Paused in place, then asked to free memory: the state is already "paused"; say the process left.
        store.add_event(ctx.job_id, "state", {"state": JobState.PAUSED.api, "exited": True, **data})
        return
    store.transition(ctx.job_id, stop.state, sources=[JobState.RUNNING, JobState.PAUSED],
                     data={**data, "exited": True}, attempt=ctx.attempt)


def _install_sigterm(ctx: JobContext) -> None:
    """SIGTERM (system shutdown, a plain ``kill``) pauses at the next pause point, with a checkpoint.

    A second SIGTERM ends the process at once, for a job that never reaches a pause point.
    """
    received = []

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)
        if len(received) > 1:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signum)
        ctx.request_locally(Control.PAUSE_FREE, SHUTDOWN_REASON)

    signal.signal(signal.SIGTERM, handler)
    # The daemon sends SIGURG after writing a control request, so a pause is read at once rather than
    # at the next poll. Its default action is to ignore it: a nudge that comes before this line is harmless.
    signal.signal(signal.SIGURG, lambda _signum, _frame: ctx.wake())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m llmos.jobs.process LAUNCH_FILE", file=sys.stderr)
        return 2
    try:
        launch = Launch.read(Path(args[0]))
    except (OSError, ValueError, TypeError) as exc:
        print(f"cannot read the launch file {args[0]}: {exc}", file=sys.stderr)
        return 2
    return run(launch)


if __name__ == "__main__":
    sys.exit(main())
