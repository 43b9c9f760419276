"""Freezing a job runner: the OS stops it outright (SIGSTOP) and continues it later (SIGCONT).

A pause at a pause point takes up to one training step, and some phases of a job have none (loading,
encoding, evaluation, saving). A frozen runner stops within milliseconds wherever it is, keeps its
memory, and resumes exactly where it was; the co-scheduler freezes runners while interactive requests
are in flight.

The one hazard is a runner stopped inside a database transaction: it would hold SQLite's write lock
until continued, and the daemon's own writes would wait for it. So a runner takes its job's freeze
lock (``flock`` on ``jobs/<id>/freeze.lock``) around every database session (``RunnerGuard``), and the
daemon takes the same lock to freeze it (``freeze``): the stop can only land between two sessions.
Anything else a frozen runner holds (a store lock while it registers its result) waits for the thaw.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from llmos.jobs.types import Control, JobPaths, JobState

if TYPE_CHECKING:
    from llmos.jobs.store import JobStore
    from llmos.jobs.types import JobInfo

LOCK_WAIT_S = 0.2  # how long freezing waits for the runner to finish its current database session
STOP_WAIT_S = 0.2  # how long freezing waits for the stop to show in /proc


class RunnerGuard:
    """The runner's side: the freeze lock held around each database session (reentrant, thread-safe).

    Two files: a session takes ``<lock>.gate`` shared for an instant, then ``<lock>`` exclusive for its
    length. A freezer holding the gate lets no new session start, so it waits for one session at most.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._gate = os.open(_gate(path), os.O_RDWR | os.O_CREAT, 0o600)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._lock = threading.RLock()
        self._depth = 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                fcntl.flock(self._gate, fcntl.LOCK_SH)  # waits while a freezer holds the gate
                fcntl.flock(self._gate, fcntl.LOCK_UN)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)


def freeze(pid: int, lock_path: Path) -> bool:
    """Stop ``pid`` between two of its database sessions. False when it could not be done now (a
    session lasted longer than ``LOCK_WAIT_S``, or the process is gone): try again later."""
    with contextlib.ExitStack() as held:  # closing the files drops the locks
        try:
            fds = [_open(held, p) for p in (_gate(lock_path), lock_path)]
        except OSError:
            return False
        deadline = time.monotonic() + LOCK_WAIT_S
        if not all(_lock(fd, deadline) for fd in fds):
            return False
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            return False
        _wait_stopped(pid, STOP_WAIT_S)  # a thread woken inside flock stops before it reaches SQLite
        return True


def thaw(pid: int) -> None:
    """Continue a frozen runner (harmless for one that is not frozen or is gone)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def is_stopped(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def _gate(path: Path) -> Path:
    return path.with_name(path.name + ".gate")


def _open(held: contextlib.ExitStack, path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    held.callback(os.close, fd)
    return fd


def _lock(fd: int, deadline: float) -> bool:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)


def _wait_stopped(pid: int, wait_s: float) -> None:
    if not Path("/proc").is_dir():
        return
    deadline = time.monotonic() + wait_s
    while not is_stopped(pid) and time.monotonic() < deadline:
        time.sleep(0.001)


class Freezer:
    """The daemon's side, owned by the ``JobRunner`` (called under its lock): which runners are frozen,
    and the job state that says so (``paused`` with ``frozen: true``, back to ``running`` on thaw)."""

    def __init__(self, store: "JobStore", jobs_dir: Path) -> None:
        self.store = store
        self.jobs_dir = jobs_dir
        self.frozen: dict[str, int] = {}  # job id -> pid

    def freeze(self, job_id: str, pid: int, reason: str) -> bool:
        if job_id in self.frozen:
            return True
        if not freeze(pid, JobPaths.of(self.jobs_dir, job_id).freeze_lock):
            return False
        if not self.store.transition(job_id, JobState.PAUSED, sources=[JobState.RUNNING], control={"reason": reason},
                                     data={"reason": reason, "frozen": True}):
            thaw(pid)  # it finished or was paused meanwhile: leave it be
            return False
        self.frozen[job_id] = pid
        return True

    def thaw(self, job_id: str, *, record: bool = True) -> bool:
        pid = self.frozen.pop(job_id, None)
        if pid is None:
            return False
        if record:
            self.store.transition(job_id, JobState.RUNNING, sources=[JobState.PAUSED], control={"reason": None},
                                  data={"resumed": True, "frozen": False})
        thaw(pid)
        return True

    def adopt(self, info: "JobInfo") -> None:
        """A runner a previous daemon left: continue it, and put a job that daemon froze back to running."""
        assert info.pid is not None
        if info.state == JobState.PAUSED and info.requested == Control.NONE:
            last = self.store.last_event(info.id, "state")
            if last is not None and last.data.get("frozen"):
                self.store.transition(info.id, JobState.RUNNING, sources=[JobState.PAUSED],
                                      control={"reason": None}, data={"resumed": True, "frozen": False})
        thaw(info.pid)
