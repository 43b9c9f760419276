"""A real Ray cluster on this machine: a head that runs nothing (``--num-cpus 0``) and two worker
nodes of one CPU each, every one its own ``ray start --block`` process group in a private temp dir,
killed by group id at the end even when a test failed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.api.server import free_port
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


@dataclass
class LocalCluster:
    port: int
    temp: Path
    head: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"ray://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false"}

    def add_worker(self) -> subprocess.Popen[bytes]:
        """Start one worker node and wait until Ray lists it alive. On a crowded machine a node can time
        out during its own start-up (its ``ray start`` exits); it is started again, up to three times."""
        import ray

        want = alive_workers() + 1 if ray.is_initialized() else None
        reason = None
        for _ in range(3):
            proc = self._start_worker()
            if want is None:
                return proc
            reason = wait_until(lambda: "up" if alive_workers() >= want else self._exited(proc),
                                "a worker node alive", interval=0.2)
            if reason == "up":
                return proc
            self.kill(proc)  # whatever it had started before it gave up
            self.workers.remove(proc)
        raise AssertionError(f"no worker node could start: {reason}")

    def _exited(self, proc: subprocess.Popen[bytes]) -> str | None:
        if proc.poll() is None:
            return None
        return f"exited: {proc.log_path.read_text()[-300:]}"  # type: ignore[attr-defined]

    def _start_worker(self) -> subprocess.Popen[bytes]:
        log = self.temp / f"worker-{len(list(self.temp.glob('worker-*.log')))}.log"
        proc = subprocess.Popen([RAY, "start", "--block", "--address", f"127.0.0.1:{self.port}", "--num-cpus", "1",
                                 "--disable-usage-stats"],
                                env=self.env(), start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=open(log, "wb"))
        proc.log_path = log  # type: ignore[attr-defined]
        self.workers.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """The node dies at once: its raylet, object store and every actor on it (the processes its
        ``ray start`` started, some in sessions of their own), by process id."""
        try:
            tree = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def node_of(self, pid: int) -> subprocess.Popen[bytes]:
        """The worker node (its ``ray start`` process) that process ``pid`` runs under."""
        ancestors = {p.pid for p in psutil.Process(pid).parents()}
        return next(w for w in self.workers if w.pid in ancestors)

    def stop(self) -> None:
        for proc in [*self.workers, self.head]:
            self.kill(proc)
        shutil.rmtree(self.temp, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def alive_workers() -> int:
    import ray

    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0)


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[LocalCluster]:
    import ray

    temp = Path(tempfile.mkdtemp(prefix="llmos-ray-", dir="/tmp"))  # short: Ray's socket paths must fit
    port = free_port()
    cluster = LocalCluster(port, temp, None)  # type: ignore[arg-type]
    cluster.head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--port", str(port), "--num-cpus", "0", "--temp-dir", str(temp),
         "--include-dashboard", "false", "--disable-usage-stats"],
        env=cluster.env(), start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=open(temp / "head.log", "wb"))
    try:
        wait_until(lambda: _answers(port), "the Ray head answering",
                   ended=lambda: None if cluster.head.poll() is None else (temp / "head.log").read_text()[-2000:])
        ray.init(address=f"127.0.0.1:{port}", namespace="llmos", logging_level="WARNING")
        for _ in range(2):
            cluster.add_worker()
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()
