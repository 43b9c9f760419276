"""Fixtures for the crash tests: a fresh llmos home per module (built-ins copied in) and real daemons
(`llmos serve` subprocesses) that the tests kill with SIGKILL and start again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from llmos.runtime import Runtime, open_runtime
from tests.api.server import free_port, wait_healthy
from tests.conftest import ModuleDirs, copy_builtin, make_settings
from tests.waiting import BACKSTOP_S

ROOT = Path(__file__).resolve().parents[2]
FAST = {"LLMOS_COSCHED": "false", "LLMOS_LOOP_INTERVAL": "0", "LLMOS_JOB_PROGRESS_INTERVAL": "0", "LLMOS_JOB_POLL_INTERVAL": "0.05", "LLMOS_KEEP_ALIVE": "600",
        "LLMOS_BUILTINS": "false"}


def env_for(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "LLMOS_HOME": str(home), "PYTHONPATH": str(ROOT), "COLUMNS": "200", **FAST, **extra}


def llmos(home: Path, *args: str, crash: str = "-", after: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``llmos ARGS`` in its own process, optionally killing itself at ``crash`` (see crashpoint.py)."""
    cmd = [sys.executable, "-m", "tests.reliability.crashpoint", "--after" if after else "--before", crash, "--", *args]
    return subprocess.run(cmd, env=env_for(home), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


class Daemon:
    """One `llmos serve` process over a home; ``kill()`` is kill -9, ``start()`` a fresh process."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, kinds: dict[str, str] | None = None) -> "Daemon":
        """A fresh `llmos serve`; ``kinds`` replaces job kinds' entries in this one (``tests/heldjobs.py``)."""
        port = free_port()
        extra = [arg for name, entry in (kinds or {}).items() for arg in ("--kind", f"{name}={entry}")]
        cmd = [sys.executable, "-m", "tests.reliability.crashpoint", *extra, "-", "--", "serve", "--port", str(port)]
        self.proc = subprocess.Popen(cmd, env=env_for(self.home), cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, text=True)
        self.url = f"http://127.0.0.1:{port}"
        wait_healthy(self.url, alive=lambda: self.proc is not None and self.proc.poll() is None)
        return self

    def kill(self) -> None:
        """kill -9 the daemon; its job runners (own sessions) live on until the test kills them too."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=BACKSTOP_S)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=BACKSTOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=BACKSTOP_S)


@pytest.fixture(scope="module")
def home(builtin_runtime: Runtime, module_dirs: ModuleDirs) -> Iterator[Path]:
    """A fresh home holding both built-in models, for daemons that get killed."""
    root = module_dirs("reliability") / "home"
    rt = open_runtime(make_settings(root), builtins=False)
    for name in ("minilm-l6", "smollm2-135m-instruct"):
        copy_builtin(rt, builtin_runtime, name)
    rt.close()
    yield root
    kill_runners(root)


def kill_runners(root: Path) -> None:
    """Kill, by the pids the jobs table records, runners that a failed test left behind in this home."""
    from llmos.db.tables import JobControl

    rt = open_home(root)
    with rt.db.session() as s:
        pids = [pid for (pid,) in s.query(JobControl.pid).filter(JobControl.pid.is_not(None)).all()]
    rt.close()
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if "llmos.jobs.process" in " ".join(proc.cmdline()):
                proc.kill()
        except psutil.Error:
            pass


def open_home(root: Path) -> Runtime:
    return open_runtime(make_settings(root), builtins=False)
