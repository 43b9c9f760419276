"""Background jobs as OS processes the kernel owns: submit, run, pause, resume, cancel, recover.

Each job attempt runs in its own runner process (``llmos.jobs.process``, see ``llmos.jobs.context`` for
what a job kind's function gets). The daemon and a runner talk only through the database:

* daemon -> runner: a control request in ``job_control.requested`` (pause / pause freeing memory /
  cancel / none), which the runner polls every ``job_poll_interval`` on a thread. No signals: a
  signal sent before the runner installed its handler would kill it, and a restarted daemon could not
  reach the runners it adopted any other way.
* runner -> daemon: state changes, progress, checkpoints and results as rows, each one transaction.

A supervisor thread in the daemon notices runners that exit without recording an outcome (a crash,
``kill -9``) and fails their jobs with the reason and the end of their log (a runner whose cluster
node was lost is requeued instead, to resume from its last checkpoint on another node); it also
starts queued jobs while fewer than ``max_jobs`` runners live. ``recover()`` at start adopts runners that outlived the last
daemon and requeues jobs whose runner is gone, to resume from their last checkpoint.

Hooks for the kernel's co-scheduling: ``pause_all(reason)`` / ``resume_all(reason)`` (in place, or
``free_memory=True`` to checkpoint and exit), which also hold the queue until resumed.
"""

from __future__ import annotations

import builtins
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any, Protocol

from llmos.errors import Conflict, InvalidInput
from llmos.jobs.freeze import Freezer
from llmos.jobs.process import Launch
from llmos.jobs.store import JobStore
from llmos.jobs.submit import queue_job
from llmos.jobs.kinds import is_driver_kind, job_kind_entry
from llmos.jobs.procs import (
    NODE_LOST_EXIT, UNKNOWN_EXIT, AdoptedProcess, RunnerProcess, Spawn, describe_exit, process_alive, process_started,
    runner_argv, spawn_runner, tail_text,
)
from llmos.jobs.types import (
    SHUTDOWN_REASON, USER_REASON, Control, JobEventInfo, JobInfo, JobPaths,
    JobState,
)
from llmos.runtime import Runtime

log = logging.getLogger("llmos.jobs")
_CLEARED = {"pid": None, "pid_started": None}
_LOG_TAIL_IN_ERROR = 4000  # bytes of the runner log kept with a crash's error
NODE_LOSSES = 3  # a job whose node is lost this often fails (it may be what kills its nodes)
_SCHEDULE_EVERY_S = 2.0  # also pick up jobs queued by another process (an in-process CLI)


class Admission(Protocol):
    """Decides whether a queued job may start now (the co-scheduler's memory check)."""

    def admit(self, info: JobInfo) -> str | None:
        """None: start it (whatever it needs is now taken for it); else why it must wait."""

    def released(self, job_id: str) -> None:
        """The job's runner is gone (or never started): give back what ``admit`` took."""

    def device(self, job_id: str) -> str | None:
        """Where ``admit`` reserved the job's memory ("cpu", "cuda:0"); None: wherever torch picks."""


class JobRunner:
    """The daemon's side of background jobs. Thread-safe; ``startup()`` / ``shutdown()`` bracket its life."""

    def __init__(self, runtime: Runtime, *, spawn: Spawn = spawn_runner,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = runtime.settings
        self.store = JobStore(runtime.db)
        self._spawn = spawn
        self._clock = clock
        self._procs: dict[str, RunnerProcess] = {}
        self._node_losses: dict[str, int] = {}  # job id -> runners of it whose cluster node was lost
        self._drivers: set[str] = set()  # live runners of driver kinds: not counted against max_jobs
        self._cancel_deadlines: dict[str, float] = {}
        self._holds: set[str] = set()
        self._lock = threading.RLock()
        self._active = False  # starts queued jobs by itself only between startup() and shutdown()
        self._dirty = True
        self._last_schedule = float("-inf")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.admission: Admission | None = None  # set by the daemon's co-scheduler
        self.freezer = Freezer(self.store, self.settings.jobs_dir)

    # -- submitting and reading ------------------------------------------------------------------
    def submit(self, kind: str, spec: dict[str, Any] | None = None, tenant: str = "default") -> str:
        """Queue a job of a registered kind; it starts when a runner slot is free. Returns its id."""
        job_id = queue_job(self.store, kind, spec, tenant)
        log.info("job %s (%s) queued for tenant %s", job_id, kind, tenant)
        self._kick()
        return job_id

    def get(self, job_id: str, tenant: str | None = None) -> JobInfo:
        """NotFound for an unknown id or another tenant's job; ``tenant=None`` sees every job."""
        return self.store.get(job_id, tenant)

    def list(self, tenant: str | None = None, states: Iterable[JobState] | None = None) -> list[JobInfo]:
        return self.store.list(tenant, states)

    def events(self, job_id: str, tenant: str | None = None, since: int = 0, limit: int = 1000,
               kinds: Iterable[str] | None = None) -> builtins.list[JobEventInfo]:
        """Events after event id ``since``, oldest first (only ``kinds`` when given)."""
        self.store.get(job_id, tenant)
        return self.store.events(job_id, since, limit, kinds)

    def logs(self, job_id: str, tenant: str | None = None, max_bytes: int = 1 << 20) -> str:
        """The end of the job's log file: its runners' stdout and stderr, every attempt."""
        self.store.get(job_id, tenant)
        return tail_text(JobPaths.of(self.settings.jobs_dir, job_id).log, max_bytes)

    def wait(self, job_id: str, states: Iterable[JobState] | None = None, timeout: float = 60.0) -> JobInfo:
        """Poll until the job is in one of ``states`` (default: any final state); TimeoutError otherwise."""
        wanted = set(states) if states is not None else {s for s in JobState if s.final}
        deadline = time.monotonic() + timeout
        while True:
            info = self.store.get(job_id)
            if info.state in wanted:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {info.state.api} after {timeout} s")
            time.sleep(0.02)

    def has_queued(self) -> bool:
        """Whether any job waits for a runner (one indexed query: the co-scheduler asks often)."""
        return bool(self.store.oldest(JobState.QUEUED, 1))

    def live(self) -> builtins.list[str]:
        """Ids of jobs with a runner process."""
        with self._lock:
            return sorted(self._procs)

    # -- control ---------------------------------------------------------------------------------
    def start(self, job_id: str) -> JobInfo:
        """Launch a queued job's runner now, whatever the concurrency limit."""
        with self._lock:
            info = self.store.get(job_id)
            if info.state != JobState.QUEUED:
                raise Conflict(f"job {job_id} is {info.state.api}; only a queued job can be started")
            self._launch(info)
            return self.store.get(job_id)

    def pause(self, job_id: str, tenant: str | None = None, *, free_memory: bool = False,
              reason: str = USER_REASON) -> JobInfo:
        """Ask the runner to pause at its next pause point (in place, or checkpoint-and-exit with
        ``free_memory``). A queued job is held at once. Returns without waiting for the runner."""
        with self._lock:
            self.freezer.thaw(job_id)  # a frozen runner must run to reach its pause point
            info = self.store.get(job_id, tenant)
            if info.state.final:
                raise Conflict(f"job {job_id} has {info.state.api}; it cannot be paused")
            if info.requested == Control.CANCEL:
                raise Conflict(f"job {job_id} is being cancelled")
            if info.state == JobState.QUEUED:
                self.store.transition(job_id, JobState.PAUSED, sources=[JobState.QUEUED],
                                      control={"reason": reason}, data={"reason": reason})
            elif info.pid is not None:
                want = Control.PAUSE_FREE if free_memory else Control.PAUSE
                self.store.request(job_id, max(want, info.requested), reason)
                self._nudge(job_id)
            else:  # paused, no process: nothing to stop; a person's pause outranks the kernel's
                self.store.set_control(job_id, reason=reason)
            return self.store.get(job_id)

    def resume(self, job_id: str, tenant: str | None = None) -> JobInfo:
        """Undo a pause: wake a runner paused in place or frozen, or requeue a job whose runner exited."""
        with self._lock:
            self.freezer.thaw(job_id)
            info = self.store.get(job_id, tenant)
            if info.state.final:
                raise Conflict(f"job {job_id} has {info.state.api}; it cannot be resumed")
            if info.requested == Control.CANCEL:
                raise Conflict(f"job {job_id} is being cancelled")
            if info.state == JobState.PAUSED and info.pid is None:
                self.store.transition(job_id, JobState.QUEUED, sources=[JobState.PAUSED],
                                      control={"requested": 0, "reason": None},
                                      data={"reason": "resumed", "resume_from": info.checkpoint})
                self._kick()
            elif info.requested != Control.NONE:
                self.store.request(job_id, Control.NONE, None)
                self._nudge(job_id)
            return self.store.get(job_id)

    def cancel(self, job_id: str, tenant: str | None = None) -> JobInfo:
        """End a job as cancelled: at once when no runner lives, else at the runner's next pause point
        (a runner that does not get there within ``job_stop_timeout`` is killed)."""
        with self._lock:
            self.freezer.thaw(job_id)
            info = self.store.get(job_id, tenant)
            if info.state.final:
                raise Conflict(f"job {job_id} has already {info.state.api}")
            if info.pid is None:
                self.store.transition(job_id, JobState.CANCELLED, control={"reason": USER_REASON},
                                      data={"reason": USER_REASON})
            elif info.requested != Control.CANCEL:
                self.store.request(job_id, Control.CANCEL, USER_REASON)
                self._cancel_deadlines[job_id] = self._clock() + self.settings.job_stop_timeout
            return self.store.get(job_id)

    def pause_all(self, reason: str, *, free_memory: bool = False) -> builtins.list[str]:
        """Pause every running job for ``reason`` (e.g. interactive load) and hold the queue; returns ids."""
        with self._lock:
            self._holds.add(reason)
            ids = [i.id for i in self.store.list(states=[JobState.RUNNING]) if i.requested == Control.NONE]
            for job_id in ids:
                self.pause(job_id, free_memory=free_memory, reason=reason)
            return ids

    def resume_all(self, reason: str) -> builtins.list[str]:
        """Resume the jobs ``pause_all(reason)`` paused (not those a person paused) and release the queue."""
        with self._lock:
            self._holds.discard(reason)
            ids = [i.id for i in self.store.list(states=[JobState.RUNNING, JobState.PAUSED])
                   if i.reason == reason and (i.state == JobState.PAUSED or i.requested != Control.NONE)]
            for job_id in ids:
                self.resume(job_id)
            self._kick()
            return ids

    def freeze_all(self, reason: str) -> builtins.list[str]:
        """Stop every running runner outright (SIGSTOP, between two of its database sessions) and hold
        the queue; returns the ids frozen now. Jobs with a control request pending are left to act on it."""
        with self._lock:
            self._holds.add(reason)
            frozen = []
            for info in self.store.list(states=[JobState.RUNNING]):
                proc = self._procs.get(info.id)
                if proc is None or info.requested != Control.NONE or info.id in self._drivers or proc.pid is None:
                    continue
                if self.freezer.freeze(info.id, proc.pid, reason):
                    frozen.append(info.id)
            return frozen

    def thaw_all(self, reason: str) -> builtins.list[str]:
        """Continue the runners ``freeze_all`` stopped and release the queue; returns their ids."""
        with self._lock:
            self._holds.discard(reason)
            ids = [job_id for job_id in list(self.freezer.frozen) if self.freezer.thaw(job_id)]
            self._kick()
            return ids

    def frozen(self) -> builtins.list[str]:
        with self._lock:
            return sorted(self.freezer.frozen)

    # -- life cycle ------------------------------------------------------------------------------
    def startup(self) -> None:
        """Recover what the last daemon left, then supervise (a thread polling runners and the queue)."""
        with self._lock:
            self._active = True
        self.recover()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._supervise, name="job-supervisor", daemon=True)
        self._thread.start()

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop supervising; ask live runners to checkpoint and exit (a restart resumes them). Runners
        that reach no pause point within ``timeout`` keep running: the next daemon adopts them."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            self._active = False
            for job_id in list(self.freezer.frozen):
                self.freezer.thaw(job_id)
            for job_id in list(self._procs):
                self._ask_to_leave(self.store.get(job_id))
        deadline = self._clock() + (self.settings.job_stop_timeout if timeout is None else timeout)
        while self.live() and self._clock() < deadline:
            time.sleep(self.settings.job_poll_interval)
            with self._lock:
                self._reap()
        for job_id in self.live():
            log.warning("job %s reached no pause point in time; its runner keeps going, the next daemon "
                        "adopts it", job_id)

    def recover(self) -> builtins.list[str]:
        """Adopt live runners of running/paused jobs; requeue jobs whose runner is gone. Returns requeued ids."""
        requeued = []
        with self._lock:
            for info in self.store.list(states=[JobState.RUNNING, JobState.PAUSED]):
                if info.id in self._procs:
                    continue
                if info.pid is not None and process_alive(info.pid, info.pid_started):
                    self._adopt(info)
                elif self._recover_gone(info):
                    requeued.append(info.id)
            self._kick()
        return requeued

    def poll(self) -> None:
        """One supervisor pass: record runner exits, enforce cancel deadlines, start queued jobs."""
        with self._lock:
            self._reap()
            due = self._clock() - self._last_schedule >= _SCHEDULE_EVERY_S
            if self._dirty or due:
                self._schedule()

    # -- internals -------------------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stopping.wait(self.settings.job_poll_interval):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the supervisor must outlive a failed pass (a locked database)
                log.exception("job supervisor pass failed")

    def _kick(self) -> None:
        with self._lock:
            self._dirty = True
            if self._active:
                self._schedule()

    def _schedule(self) -> None:
        self._dirty = False
        self._last_schedule = self._clock()
        if not self._active or self._holds:
            return
        free = self.settings.max_jobs - len(self._procs.keys() - self._drivers)
        if free > 0:
            for job_id in self.store.oldest(JobState.QUEUED, free):
                info = self.store.get(job_id)
                if not self._admitted(info):
                    break  # first come, first served: a later, smaller job does not overtake it
                self._launch(info)

    def _admitted(self, info: JobInfo) -> bool:
        """Ask the admission hook; a job told to wait stays queued with the reason (an event on change)."""
        reason = self.admission.admit(info) if self.admission is not None else None
        if reason is None:
            return True
        if reason != info.reason:
            self.store.set_control(info.id, reason=reason)
            self.store.add_event(info.id, "waiting", {"reason": reason})
            log.info("job %s waits: %s", info.id, reason)
        return False

    def _nudge(self, job_id: str) -> None:
        """SIGURG: the runner reads its control request now instead of at its next poll (it ignores
        the signal until its handler is installed, so an early nudge is harmless; the poll still runs)."""
        proc = self._procs.get(job_id)
        if proc is not None:
            try:
                proc.send_signal(signal.SIGURG)
            except OSError:
                pass  # gone: the supervisor records its exit

    def _released(self, job_id: str) -> None:
        if self.admission is not None:
            self.admission.released(job_id)

    def _launch(self, info: JobInfo) -> None:
        try:
            entry = job_kind_entry(info.kind)
        except InvalidInput as exc:
            self.store.transition(info.id, JobState.FAILED, sources=[JobState.QUEUED], job={"error": exc.message},
                                  data={"error": exc.message})
            self._released(info.id)
            return
        if not self.store.launch(info.id):
            self._released(info.id)
            return
        paths = JobPaths.of(self.settings.jobs_dir, info.id).create()
        device = self.admission.device(info.id) if self.admission is not None else None
        Launch.of(info.id, entry, self.settings, device).write(paths.launch)
        with open(paths.log, "a") as f:
            resume = f", resume from {info.checkpoint}" if info.checkpoint else ""
            f.write(f"=== {datetime.now(timezone.utc).isoformat(timespec='seconds')} attempt "
                    f"{info.attempts + 1}{resume} ===\n")
        try:
            proc = self._spawn(runner_argv(paths.launch), paths.log)
        except OSError as exc:
            msg = f"cannot start the runner process: {exc}"
            self.store.transition(info.id, JobState.FAILED, sources=[JobState.RUNNING], job={"error": msg},
                                  data={"error": msg})
            self._released(info.id)
            return
        self._procs[info.id] = proc
        if is_driver_kind(info.kind):
            self._drivers.add(info.id)
        self.store.set_control(info.id, pid=proc.pid, pid_started=process_started(proc.pid))
        log.info("job %s: runner pid %d started (attempt %d)", info.id, proc.pid, info.attempts + 1)

    def _reap(self) -> None:
        for job_id, proc in list(self._procs.items()):
            rc = proc.poll()
            if rc is None:
                self._enforce_cancel(job_id, proc)
                continue
            del self._procs[job_id]
            self._drivers.discard(job_id)
            self.freezer.thaw(job_id, record=False)  # it is gone: only forget it
            self._cancel_deadlines.pop(job_id, None)
            self._released(job_id)
            self._on_exit(job_id, rc)
            if self.store.get(job_id).state.final:
                self._node_losses.pop(job_id, None)  # counted per job while it may still run again
            self._dirty = True

    def _enforce_cancel(self, job_id: str, proc: RunnerProcess) -> None:
        deadline = self._cancel_deadlines.get(job_id)
        if deadline is not None and self._clock() >= deadline:
            log.warning("job %s: runner reached no pause point %.0f s after cancel; killing it", job_id,
                        self.settings.job_stop_timeout)
            del self._cancel_deadlines[job_id]
            proc.send_signal(signal.SIGKILL)

    def _on_exit(self, job_id: str, rc: int) -> None:
        """A runner exited: keep what it recorded; otherwise say how it ended."""
        info = self.store.get(job_id)
        if info.state.final:
            self.store.set_control(job_id, **_CLEARED)
        elif info.state == JobState.PAUSED and rc in (0, UNKNOWN_EXIT):  # left after a checkpoint
            if info.requested == Control.NONE:  # resumed while it was leaving: run it again
                self.store.transition(job_id, JobState.QUEUED, sources=[JobState.PAUSED], control=_CLEARED,
                                      data={"reason": "resumed"})
            else:
                self.store.set_control(job_id, **_CLEARED)
        elif info.requested == Control.CANCEL:
            self.store.transition(job_id, JobState.CANCELLED, control=_CLEARED,
                                  data={"reason": info.reason, "runner": describe_exit(rc)})
        elif rc == NODE_LOST_EXIT and self._count_node_loss(job_id) < NODE_LOSSES:
            self._recover_gone(info, reason="node lost")
        else:
            self._fail_exited(info, rc)

    def _count_node_loss(self, job_id: str) -> int:
        """How many of this job's runners lost their node while this daemon watched, this one included."""
        self._node_losses[job_id] = self._node_losses.get(job_id, 0) + 1
        return self._node_losses[job_id]

    def _fail_exited(self, info: JobInfo, rc: int) -> None:
        reason = describe_exit(rc)
        if rc == NODE_LOST_EXIT:
            reason += f" ({NODE_LOSSES} times: a job that loses its node this often is not started again)"
        tail = tail_text(JobPaths.of(self.settings.jobs_dir, info.id).log, _LOG_TAIL_IN_ERROR)
        error = f"{reason}\n--- end of the runner log ---\n{tail}" if tail else reason
        self.store.transition(info.id, JobState.FAILED, sources=[JobState.RUNNING, JobState.PAUSED],
                              control=_CLEARED, job={"error": error}, data={"error": reason})
        log.warning("job %s failed: %s", info.id, reason)

    def _ask_to_leave(self, info: JobInfo) -> None:
        """At shutdown: checkpoint and exit. A person's pause stays a person's pause after restart."""
        if info.state.final or info.requested >= Control.PAUSE_FREE:
            return
        keep = info.state == JobState.PAUSED or info.requested == Control.PAUSE
        self.store.request(info.id, Control.PAUSE_FREE, info.reason if keep else SHUTDOWN_REASON)

    def _adopt(self, info: JobInfo) -> None:
        assert info.pid is not None
        self._procs[info.id] = AdoptedProcess(info.pid, info.pid_started)
        self.freezer.adopt(info)  # the previous daemon may have died with it frozen
        if is_driver_kind(info.kind):
            self._drivers.add(info.id)
        if info.reason == SHUTDOWN_REASON and info.requested == Control.PAUSE_FREE:
            self.store.request(info.id, Control.NONE, None)  # the daemon is back: no need to leave
        log.info("job %s: adopted runner pid %d left by the previous daemon", info.id, info.pid)

    def _recover_gone(self, info: JobInfo, reason: str = "recovered") -> bool:
        """A running/paused job whose runner is gone (the daemon was down, or its cluster node was
        lost): requeued to resume from its last checkpoint, unless cancelled or paused by a person.
        True if requeued."""
        if info.requested == Control.CANCEL:
            self.store.transition(info.id, JobState.CANCELLED, control=_CLEARED, data={"reason": info.reason})
            return False
        if info.state == JobState.PAUSED and info.reason == USER_REASON:
            self.store.set_control(info.id, **_CLEARED)  # stays paused; a resume restarts it
            return False
        self.store.transition(info.id, JobState.QUEUED, sources=[JobState.RUNNING, JobState.PAUSED],
                              control={**_CLEARED, "requested": 0, "reason": None},
                              data={"reason": reason, "resume_from": info.checkpoint})
        log.info("job %s: runner gone (%s); requeued to resume from %s", info.id, reason,
                 info.checkpoint or "the start")
        return True
