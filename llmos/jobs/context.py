"""JobContext: what a job kind's function gets inside its runner process.

A job kind is ``fn(ctx: JobContext, spec: dict) -> dict | None``. The contract a training loop keeps:

    state = load(ctx.resume_from) if ctx.resume_from else fresh()   # continue where the last run stopped
    for step in range(state.step + 1, total + 1):
        train_one_micro_batch(...)
        ctx.progress(step, total, loss=loss)                        # cheap: rows are throttled
        ctx.pause_point(lambda: save(state, ctx.checkpoint_dir))    # at EVERY micro-batch boundary
    return {"model": "name:tag", ...}                              # the job's result (JSON)

``pause_point(save_checkpoint)`` returns at once unless the daemon asked for something; then:

* pause (in place): records state ``paused``, blocks until resume, records ``running`` and returns.
  Memory stays held; no checkpoint is written; resuming costs nothing. A cancel or a freeing pause
  that arrives while blocked is handled as below.
* pause with ``free_memory`` (also daemon shutdown, SIGTERM): calls ``save_checkpoint()``, records
  the checkpoint as the resume point, then raises ``JobStop``. The runner exits; a resume starts a
  new runner whose ``ctx.resume_from`` is that checkpoint. Without a callback the resume restarts from
  the last checkpoint recorded by ``ctx.save_checkpoint`` (or from scratch).
* cancel: raises ``JobStop`` at once (no checkpoint); the job ends ``cancelled``.
* superseded (recovery started a newer attempt of this job): raises ``JobStop`` and records nothing.

``JobStop`` derives from BaseException so a loop's ``except Exception`` does not swallow it; ``finally``
blocks run, so cleanup belongs there. ``save_checkpoint`` writes under ``ctx.checkpoint_dir`` (write a
temp file then rename: a kill during the save must leave the previous checkpoint whole) and may return
the path it wrote (default: ``checkpoint_dir``). Requests arrive through a polling thread, so each
check in the loop is a flag read: a pause takes effect within one micro-batch plus ``job_poll_interval``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.config import Settings
from llmos.jobs.store import JobStore
from llmos.jobs.types import Control, JobInfo, JobPaths, JobProgress, JobState

if TYPE_CHECKING:
    from llmos.store.store import Store

SaveCheckpoint = Callable[[], "str | Path | None"]
RESERVED_EVENTS = frozenset({"state", "progress", "control", "checkpoint"})
SUPERSEDED = "superseded by a newer attempt"


class JobStop(BaseException):
    """Unwinds the job function at a pause point: the runner records ``state`` and exits."""

    def __init__(self, state: JobState | None, reason: str | None = None) -> None:
        super().__init__(f"job stopped: {state.api if state else 'state changed elsewhere'} ({reason})")
        self.state = state  # None: someone else already recorded the job's fate; write nothing
        self.reason = reason


class EtaEstimator:
    """Seconds per step as a moving average of recent steps; time spent paused never counts."""

    def __init__(self, clock: Callable[[], float], smoothing: float = 0.3) -> None:
        self._clock = clock
        self._alpha = smoothing
        self._last: tuple[int, float] | None = None
        self.seconds_per_step: float | None = None

    def update(self, step: int, total: int | None) -> tuple[float | None, float | None]:
        """(eta seconds, steps per second) after reaching ``step``."""
        now = self._clock()
        if self._last is not None and step > self._last[0]:
            sample = (now - self._last[1]) / (step - self._last[0])
            prev = self.seconds_per_step
            self.seconds_per_step = sample if prev is None else self._alpha * sample + (1 - self._alpha) * prev
        if self._last is None or step != self._last[0]:
            self._last = (step, now)
        sps = self.seconds_per_step
        if sps is None:
            return None, None
        eta = max(0.0, (total - step) * sps) if total is not None else None
        return eta, (1.0 / sps if sps > 0 else None)

    def rebase(self) -> None:
        """Forget the last timestamp (after a pause) but keep the learned speed."""
        self._last = None


class ControlWatcher:
    """Polls the job's control request on a thread; the loop's checks read a field, never the database."""

    def __init__(self, read: Callable[[], tuple[Control, str | None]], interval: float) -> None:
        self._read = read
        self._interval = interval
        self._cond = threading.Condition()
        self._db: tuple[Control, str | None] = (Control.NONE, None)
        self._local: tuple[Control, str | None] = (Control.NONE, None)
        self._stopped = threading.Event()
        self._wake = threading.Event()  # set by ``wake()``: poll now rather than at the next interval
        self._thread = threading.Thread(target=self._loop, name="job-control", daemon=True)

    def start(self) -> None:
        self._poll()  # a request made before this runner started is seen before the first step
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def wake(self) -> None:
        """Read the control request now (the daemon's SIGURG nudge after writing one)."""
        self._wake.set()

    def request_locally(self, control: Control, reason: str) -> None:
        """A request from inside the process (SIGTERM); safe to call from a signal handler."""
        self._local = (control, reason)
        self._notify()

    @property
    def current(self) -> tuple[Control, str | None]:
        return max(self._db, self._local, key=lambda r: r[0])

    def wait_change(self, seen: Control, timeout: float) -> tuple[Control, str | None]:
        with self._cond:
            self._cond.wait_for(lambda: self.current[0] != seen, timeout=timeout)
        return self.current

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if not self._stopped.is_set():
                self._poll()

    def _poll(self) -> None:
        try:
            value = self._read()
        except Exception as exc:  # noqa: BLE001 - a busy database must not kill the job; try next tick
            print(f"job control poll failed: {exc}", flush=True)
            return
        if value != self._db:
            self._db = value
            self._notify()

    def _notify(self) -> None:
        # acquire with a timeout: a signal handler interrupting a holder of this lock must not deadlock
        if self._cond.acquire(timeout=0.05):
            try:
                self._cond.notify_all()
            finally:
                self._cond.release()


class JobContext:
    """The job function's handle on the kernel. See the module docstring for the pause contract."""

    def __init__(self, store: JobStore, info: JobInfo, settings: Settings, *,
                 clock: Callable[[], float] = time.monotonic, watcher: ControlWatcher | None = None) -> None:
        self.job_id = info.id
        self.kind = info.kind
        self.spec = dict(info.spec)
        self.attempt = info.attempts
        self.settings = settings
        paths = JobPaths.of(settings.jobs_dir, info.id).create()
        self.checkpoint_dir: Path = paths.checkpoints
        self.work_dir: Path = paths.work  # scratch space kept across attempts (caches, exports)
        self.resume_from: Path | None = _existing(info.checkpoint)
        self._store = store
        self._clock = clock
        self._eta = EtaEstimator(clock)
        self._watcher = watcher or ControlWatcher(self._read_control, settings.job_poll_interval)
        self._progress = info.progress
        self._pending: JobProgress | None = None
        self._last_write = float("-inf")
        self._paused = False
        self._store_obj: Store | None = None

    # -- reporting -------------------------------------------------------------------------------
    def progress(self, step: int, total: int | None = None, **metrics: float) -> None:
        """Report reaching ``step`` of ``total`` with metrics (loss=, metric=, ...); ETA is computed here.

        Rows are written at most every ``job_progress_interval`` seconds; the last report is always
        written (at the final step, a pause point after the interval, an event, a pause, the end).
        """
        total = total if total is not None else self._progress.total
        eta, rate = self._eta.update(step, total)
        self._progress = JobProgress(step, total, {k: float(v) for k, v in metrics.items()}, eta, rate)
        self._pending = self._progress
        if total is not None and step >= total:
            self._flush()
        else:
            self._flush_if_due()

    def event(self, kind: str, **data: Any) -> None:
        """Record a job-specific event (e.g. "eval", "early_stop"); JSON-serialisable data."""
        if kind in RESERVED_EVENTS or not 0 < len(kind) <= 32:
            raise ValueError(f"event kind {kind!r} is reserved or not 1-32 characters")
        self._flush()  # keeps the history in order: the progress that led here comes first
        self._store.add_event(self.job_id, kind, data)

    def log(self, msg: str) -> None:
        """A line in the job's log file (``llmos jobs logs ID``)."""
        print(f"{datetime.now().strftime('%H:%M:%S')} {msg}", flush=True)

    # -- control ---------------------------------------------------------------------------------
    def should_pause(self) -> bool:
        """A pause (of either kind) is requested: a loop may prepare, then call ``pause_point``."""
        return self._watcher.current[0] in (Control.PAUSE, Control.PAUSE_FREE)

    def should_stop(self) -> bool:
        """The process is asked to exit (cancel or freeing pause) at its next ``pause_point``."""
        return self._watcher.current[0] in (Control.PAUSE_FREE, Control.CANCEL)

    def pause_point(self, save_checkpoint: SaveCheckpoint | None = None) -> None:
        """Call at every safe boundary; returns when the loop may go on, or raises JobStop."""
        request, reason = self._watcher.current
        if request == Control.PAUSE:
            self._flush()
            request, reason = self._wait_paused(reason)
        if request == Control.NONE:
            self._flush_if_due()
            return
        if reason == SUPERSEDED:
            raise JobStop(None, SUPERSEDED)
        self._flush()
        if request == Control.PAUSE_FREE:
            if save_checkpoint is not None:
                self.save_checkpoint(save_checkpoint)
            raise JobStop(JobState.PAUSED, reason)
        raise JobStop(JobState.CANCELLED, reason)

    def save_checkpoint(self, save: SaveCheckpoint) -> Path:
        """Run ``save`` and record what it wrote as the point a restarted runner resumes from.

        Call it yourself every N steps too: a runner killed without warning resumes from the last one.
        """
        path = Path(save() or self.checkpoint_dir)
        self._flush()
        self._store.add_event(self.job_id, "checkpoint", {"path": str(path), "step": self._progress.step},
                              checkpoint=str(path))
        return path

    @property
    def jobs(self) -> JobStore:
        """The job table, for a job that drives other jobs (a tuning job queues and watches its trials)."""
        return self._store

    @property
    def store(self) -> "Store":
        """The model store (opened on first use), for jobs that read base models or register results."""
        if self._store_obj is None:
            from llmos.store.store import Store

            self._store_obj = Store(self.settings, self._store.db)
        return self._store_obj

    # -- runner plumbing (jobproc) -----------------------------------------------------------------
    @property
    def last_progress(self) -> JobProgress:
        return self._progress

    @property
    def paused(self) -> bool:
        return self._paused

    def start(self) -> None:
        self._watcher.start()

    def request_locally(self, control: Control, reason: str) -> None:
        self._watcher.request_locally(control, reason)

    def wake(self) -> None:
        self._watcher.wake()

    def close(self) -> None:
        self._flush()
        self._watcher.stop()

    def _wait_paused(self, reason: str | None) -> tuple[Control, str | None]:
        self._set_state(JobState.PAUSED, reason=reason, step=self._progress.step)
        self.log(f"paused at step {self._progress.step} ({reason or 'no reason given'})")
        request = (Control.PAUSE, reason)
        while request[0] == Control.PAUSE:
            request = self._watcher.wait_change(Control.PAUSE, timeout=1.0)
        if request[0] == Control.NONE:
            self._set_state(JobState.RUNNING, resumed=True, step=self._progress.step)
            self._eta.rebase()
            self.log("resumed")
        return request

    def _read_control(self) -> tuple[Control, str | None]:
        request, reason, attempt = self._store.control(self.job_id)
        if attempt != self.attempt:  # a newer runner owns the job (recovery raced a runner thought dead)
            return Control.CANCEL, SUPERSEDED
        return request, reason

    def _set_state(self, state: JobState, **data: Any) -> None:
        if not self._store.transition(self.job_id, state, sources=[JobState.RUNNING, JobState.PAUSED], data=data,
                                      attempt=self.attempt):
            raise JobStop(None, "the job's state was changed outside its runner")
        self._paused = state == JobState.PAUSED

    def _flush_if_due(self) -> None:
        if self._pending is not None and self._clock() - self._last_write >= self.settings.job_progress_interval:
            self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._store.add_event(self.job_id, "progress", pending.to_dict(), progress=pending)
            self._last_write = self._clock()


def _existing(path: str | None) -> Path | None:
    if path and Path(path).exists():
        return Path(path)
    return None
