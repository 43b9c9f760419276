"""Runner processes as the daemon sees them: spawning, watching, and naming how they ended.

The spawn function is injected into ``JobRunner`` (style rule 5); the default starts the runner as a
fresh interpreter (no fork: torch and threads do not survive one) in its own session, so a Ctrl-C
meant for the daemon's terminal does not reach the job: the daemon pauses its jobs itself on shutdown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import psutil

UNKNOWN_EXIT = -(1 << 16)
"""What ``poll`` returns for a process that is gone but whose exit status cannot be known."""
NODE_LOST_EXIT = UNKNOWN_EXIT - 1
"""What ``poll`` returns for a runner whose cluster node is gone (the runner went with it)."""
_START_TOLERANCE_S = 0.1  # create_time comes from clock ticks; a reused pid starts seconds or days later


class RunnerProcess(Protocol):
    """The part of ``subprocess.Popen`` the supervisor uses."""

    pid: int

    def poll(self) -> int | None:
        """None while running; else the exit code (negative: killed by that signal), UNKNOWN_EXIT, or
        NODE_LOST_EXIT when the cluster node it ran on is gone."""

    def send_signal(self, sig: int) -> None: ...


Spawn = Callable[[list[str], Path], RunnerProcess]
"""``spawn(argv, log_path)``: start argv with stdout and stderr appended to log_path."""


def runner_argv(launch_file: Path) -> list[str]:
    return [sys.executable, "-m", "llmos.jobs.process", str(launch_file)]


def spawn_runner(argv: list[str], log_path: Path) -> RunnerProcess:
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)


def process_started(pid: int) -> float | None:
    """The process's start time (seconds since the epoch): with the pid, an identity that is never reused."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_alive(pid: int, started: float | None) -> bool:
    """Whether ``pid`` is still the process that started at ``started`` (and not a zombie)."""
    try:
        proc = psutil.Process(pid)
        if started is not None and abs(proc.create_time() - started) > _START_TOLERANCE_S:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class AdoptedProcess:
    """A runner an earlier daemon started and that outlived it: not our child, so watched through psutil."""

    def __init__(self, pid: int, started: float | None) -> None:
        self.pid = pid
        self.started = started

    def poll(self) -> int | None:
        return None if process_alive(self.pid, self.started) else UNKNOWN_EXIT

    def send_signal(self, sig: int) -> None:
        if process_alive(self.pid, self.started):
            os.kill(self.pid, sig)


def describe_exit(returncode: int) -> str:
    """Words for a runner that exited without recording a final state."""
    if returncode == NODE_LOST_EXIT:
        return "the cluster node running it was lost"
    if returncode == UNKNOWN_EXIT:
        return "runner process exited; its exit status is unknown (an earlier daemon started it)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"runner killed by signal {-returncode} ({name})"
    if returncode == 0:
        return "runner exited without recording a final state"
    return f"runner exited with code {returncode}"


def tail_text(path: Path, max_bytes: int) -> str:
    """The last ``max_bytes`` of a text file (from a line start when cut), or "" if it does not exist."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return ""
    if size > max_bytes and b"\n" in data:
        data = data[data.index(b"\n") + 1:]
    return data.decode("utf-8", errors="replace")
