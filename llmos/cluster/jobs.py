"""Job runners on cluster nodes: the ``JobRunner``'s spawn function for cluster mode.

``RaySpawn`` starts each runner process through a small ``RunnerHost`` actor that takes one CPU, so
Ray puts it on a node with a free core (a worker, not a head started with ``--num-cpus 0``). A job
whose memory the kernel reserved on a node (its launch file names the device) goes to that node if
it has a free core, else to any that has; a job reserved on a node's GPU goes to that node alone and
sees that GPU only (it takes no core from Ray's count: the GPU was its admission). The
runner is the same ``python -m llmos.jobs.process`` as on one machine: it reads its launch file and
talks to the database and store like any runner, so the nodes must see the daemon's home at the same
path (a shared file system) and the database must be one every node reaches (PostgreSQL). Its
control requests (pause, cancel) travel through the database as always; the daemon's supervisor
polls and signals the process through the actor. A node that dies takes its runner with it: the
supervisor is told the node was lost (``NODE_LOST_EXIT``) and requeues the job, so a runner on
another node resumes it from its last checkpoint.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmos.cluster.ray_cluster import NodeInfo, cuda_id_of, gpu_env
from llmos.jobs.process import Launch
from llmos.jobs.procs import NODE_LOST_EXIT, UNKNOWN_EXIT

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 30.0


class RunnerHost:
    """Runs inside the actor: one runner process on this node."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, argv: list[str], log_path: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        import ray

        with open(log_path, "ab") as log_file:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                          start_new_session=True, close_fds=True, env={**os.environ, **(env or {})})
        return self._proc.pid, ray.get_runtime_context().get_node_id()

    def poll(self) -> int | None:
        return self._proc.poll() if self._proc is not None else UNKNOWN_EXIT

    def send_signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)


class RemoteRunner:
    """A runner process on a node, as the supervisor sees it (``llmos.jobs.procs.RunnerProcess``)."""

    def __init__(self, actor: Any, pid: int, node_id: str) -> None:
        self._actor = actor
        self.pid = pid
        self.node_id = node_id
        self._exit: int | None = None

    def poll(self) -> int | None:
        import ray

        if self._exit is not None:
            return self._exit
        try:
            code = ray.get(self._actor.poll.remote(), timeout=CALL_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            return None  # a busy node: ask again at the next poll
        except ray.exceptions.RayError as exc:
            log.error("the node running job runner %s is gone: %s", self.pid, type(exc).__name__)
            code = NODE_LOST_EXIT
        if code is not None:
            self._exit = code
            ray.kill(self._actor, no_restart=True)
        return code

    def send_signal(self, sig: int) -> None:
        import ray

        if self._exit is None:
            try:
                ray.get(self._actor.send_signal.remote(sig), timeout=CALL_TIMEOUT_S)
            except ray.exceptions.RayError:
                pass  # gone: the next poll records the exit


class RaySpawn:
    """``spawn(argv, log_path)`` on a cluster node with a free CPU (see the module docstring).
    ``node_of`` finds the node of a device id (StopIteration: no such node now)."""

    def __init__(self, cpus: float = 1.0, node_of: Callable[[str], NodeInfo] | None = None) -> None:
        self.cpus = cpus
        self._node_of = node_of
        self.started: list[tuple[int, str]] = []  # (pid, node id) of each runner started, for ps and tests

    def _options(self, device: str | None) -> dict[str, Any]:
        """Where the runner of a job reserved on ``device`` may start, and with what it sees."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = self._find(device)
        if node is None:
            return {"num_cpus": self.cpus}
        gpu = cuda_id_of(device or "") is not None
        return {"num_cpus": 0 if gpu else self.cpus,
                "scheduling_strategy": NodeAffinitySchedulingStrategy(node.node_id, soft=not gpu)}

    def _find(self, device: str | None) -> NodeInfo | None:
        if self._node_of is None or not device or not device.startswith("node-"):
            return None
        try:
            return self._node_of(device)
        except StopIteration:
            log.warning("the node of device %s is gone; the runner goes to any node with a free core", device)
            return None

    def __call__(self, argv: list[str], log_path: Path) -> RemoteRunner:
        import ray

        device = Launch.read(Path(argv[-1])).device
        options = self._options(device)
        env = gpu_env(device) if device and "scheduling_strategy" in options else {}
        actor = ray.remote(RunnerHost).options(**options).remote()
        try:
            pid, node_id = ray.get(actor.start.remote(argv, str(log_path), env), timeout=CALL_TIMEOUT_S * 4)
        except ray.exceptions.RayError as exc:
            ray.kill(actor, no_restart=True)
            raise OSError(f"no cluster node could start the runner: {exc}") from None
        log.info("job runner pid %s started on cluster node %s", pid, node_id[:12])
        self.started.append((pid, node_id))
        return RemoteRunner(actor, pid, node_id)
