"""Joining a Ray cluster, and its nodes as the kernel's devices.

``connect(address)`` checks that the head answers (a TCP connect bounded by ``timeout_s``) before
``ray.init`` joins it, so a wrong address fails start-up at once with the address and the reason
instead of hanging. ``ray://HOST:PORT`` and ``HOST:PORT`` both name the head's GCS port (6379 unless
``ray start --port`` said otherwise): the daemon joins the cluster as a driver. ``auto`` joins the
cluster already running on this machine, or starts a local one.

Every alive node with CPUs is a device (``kind`` NODE); the head started with ``--num-cpus 0`` holds
the daemon alone. Each GPU of a node that Ray counts GPUs on is a device of its own (``kind``
NODE_GPU, ``node-<id>/cuda:<its CUDA id there>``), with the total and free memory that torch reports
on that node (``probe_node_gpus``, asked once per node: a task pinned to the node that sees all its
GPUs; by ``refresh``, never by placement's look at which nodes are alive). A node whose GPUs torch
cannot see (a CPU build of torch there) offers none, and says so. A node that dies is marked dead at
once (the engine that saw it die reports it) and dropped from placement (Ray's own health checks
take seconds to agree); a node that joins, or a restarted one (Ray gives it a new id), is added by
``refresh``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmos.errors import ConfigError
from llmos.kernel.devices import NODE, NODE_GPU, Device

log = logging.getLogger(__name__)

NAMESPACE = "llmos"
REFRESH_S = 2.0  # how stale the node list may be when placement asks whether a node is alive
DEAD_HOLD_S = 60.0  # a node an engine saw die stays out of placement this long, whatever Ray says yet
PROBE_S = 60.0  # a node's GPU probe that has not answered in this long finds no GPUs
# Ray hides every GPU from a task or actor that asks for none; llmos places on GPUs itself, so its
# processes on a node choose their GPU with CUDA_VISIBLE_DEVICES and tell Ray not to overwrite it.
NOSET_CUDA = "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class GpuInfo:
    """One GPU of a node, as torch there sees it."""

    cuda_id: str  # what CUDA_VISIBLE_DEVICES names it by on its node (an ordinal or a UUID)
    name: str
    total_bytes: int
    free_bytes: int


GpuProbe = Callable[["NodeInfo"], list[GpuInfo]]


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    address: str
    cpus: float
    gpus: float
    memory: int
    alive: bool


def device_id(node_id: str) -> str:
    return f"node-{node_id[:12]}"


def gpu_device_id(node_id: str, cuda_id: str) -> str:
    return f"{device_id(node_id)}/cuda:{cuda_id}"


def node_part(device_id_: str) -> str:
    """The node's device id of any device on it (the node itself, or one of its GPUs)."""
    return device_id_.split("/", 1)[0]


def cuda_id_of(device_id_: str) -> str | None:
    """The CUDA id on its node of a node's GPU device (None for any other device)."""
    return device_id_.split("/cuda:", 1)[1] if "/cuda:" in device_id_ else None


def gpu_env(device_id_: str) -> dict[str, str]:
    """The environment a process on a node needs to use exactly ``device_id_``, a GPU of that node.
    For a node's CPUs none is needed: Ray shows no GPU to an actor that asked for none."""
    cuda = cuda_id_of(device_id_)
    return {NOSET_CUDA: "1", "CUDA_VISIBLE_DEVICES": cuda} if cuda is not None else {}


def parse_address(address: str) -> tuple[str, int]:
    """``ray://HOST:PORT`` or ``HOST:PORT`` -> (host, port); ConfigError naming what is wrong."""
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"cluster address {address!r} is not ray://HOST:PORT, HOST:PORT or auto")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float) -> None:
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ConfigError(f"cannot reach the Ray cluster at {address}: {reason} "
                          f"(waited up to {timeout_s:g}s); start its head with `ray start --head` "
                          "or fix LLMOS_CLUSTER") from None


def connect(address: str, *, timeout_s: float = 10.0, env: dict[str, str] | None = None) -> "RayCluster":
    """Join the cluster at ``address`` (see the module docstring); ConfigError when it does not answer."""
    import ray

    runtime_env = {"env_vars": env} if env else None
    if ray.is_initialized():  # this process has joined a cluster already (a test's, or a restarted app's)
        return RayCluster(address, owned=False)
    if address == "auto":
        try:
            ray.init(address="auto", namespace=NAMESPACE, logging_level="WARNING", runtime_env=runtime_env)
        except ConnectionError:
            ray.init(namespace=NAMESPACE, include_dashboard=False, logging_level="WARNING", runtime_env=runtime_env)
    else:
        check_reachable(address, timeout_s)
        host, port = parse_address(address)
        try:  # something answers there; Ray itself gives up on a port that is not a head within seconds
            ray.init(address=f"{host}:{port}", namespace=NAMESPACE, logging_level="WARNING", runtime_env=runtime_env)
        except (ConnectionError, RuntimeError) as exc:
            raise ConfigError(f"cannot join the Ray cluster at {address}: {exc}; is that the head's GCS port "
                              "(`ray start --head --port`)?") from None
    return RayCluster(address)


class RayCluster:
    """The joined cluster: its nodes as devices, which are alive, and leaving it."""

    def __init__(self, address: str, nodes: Callable[[], list[dict[str, Any]]] | None = None, *,
                 owned: bool = True, gpus: GpuProbe | None = None) -> None:
        self.address = address
        self._owned = owned  # whether closing leaves the cluster (not when whoever joined it still uses it)
        self._list = nodes or _ray_nodes
        self._probe = gpus or probe_node_gpus
        self._gpus: dict[str, list[GpuInfo]] = {}  # node id -> its GPUs (probed once)
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeInfo] = {}
        self._dead: dict[str, float] = {}  # device id -> when an engine reported it gone
        self._read_at = float("-inf")
        self.refresh()

    def refresh(self, *, probe: bool = True) -> list[NodeInfo]:
        """Read the node list from Ray; returns the nodes seen alive for the first time (or again).
        ``probe``: also ask each alive node not yet probed for its GPUs (seconds each; placement's
        quick look at which nodes are alive skips it, the node watcher does it)."""
        found = {}
        for n in self._list():
            res = n.get("Resources", {})
            found[n["NodeID"]] = NodeInfo(n["NodeID"], n.get("NodeManagerAddress", "?"), float(res.get("CPU", 0)),
                                          float(res.get("GPU", 0)), int(res.get("memory", 0)), bool(n.get("Alive")))
        with self._lock:
            new = [n for i, n in found.items() if n.alive and n.cpus > 0
                   and (i not in self._nodes or not self._nodes[i].alive)]
            self._nodes = found
            self._read_at = time.monotonic()
            unprobed = [n for n in found.values()
                        if probe and n.alive and n.gpus > 0 and n.node_id not in self._gpus]
        for n in unprobed:  # outside the lock: a probe takes seconds
            self._gpus[n.node_id] = self._probe_gpus(n)
        return new

    def _probe_gpus(self, node: NodeInfo) -> list[GpuInfo]:
        try:
            found = self._probe(node)
        except Exception as exc:  # noqa: BLE001 - a node whose probe fails offers its CPUs only
            log.warning("cluster node %s: its GPUs could not be probed (%s); only its CPUs are used",
                        device_id(node.node_id), exc)
            return []
        if not found:
            log.warning("cluster node %s: Ray counts %g GPU(s) there but torch sees none (a CPU build of torch "
                        "on that node?); only its CPUs are used", device_id(node.node_id), node.gpus)
        return found

    def devices(self) -> list[Device]:
        """Alive nodes with CPUs, and each of their GPUs, as devices of the kernel's pool."""
        with self._lock:
            nodes = [n for n in self._nodes.values() if n.alive and n.cpus > 0 and not self._held_dead(device_id(n.node_id))]
            gpus = {n.node_id: self._gpus.get(n.node_id, []) for n in nodes}
        return [d for n in nodes for d in (self.device(n), *(self.gpu_device(n, g) for g in gpus[n.node_id]))]

    def _held_dead(self, device_id_: str) -> bool:
        return time.monotonic() - self._dead.get(device_id_, float("-inf")) < DEAD_HOLD_S

    @staticmethod
    def device(n: NodeInfo) -> Device:
        return Device(device_id(n.node_id), NODE, f"{n.address} ({n.cpus:g} CPU, {n.gpus:g} GPU)", n.memory, n.memory)

    @staticmethod
    def gpu_device(n: NodeInfo, g: GpuInfo) -> Device:
        return Device(gpu_device_id(n.node_id, g.cuda_id), NODE_GPU, f"{g.name} on {n.address}", g.total_bytes,
                      g.free_bytes)

    def node(self, device: Device | str) -> NodeInfo:
        """The node a device (or device id) is on: the node itself, or the node of one of its GPUs."""
        wanted = node_part(device if isinstance(device, str) else device.id)
        with self._lock:
            return next(n for i, n in self._nodes.items() if device_id(i) == wanted)

    def alive(self, device: Device) -> bool:
        if time.monotonic() - self._read_at > REFRESH_S:
            self.refresh(probe=False)
        with self._lock:
            if self._held_dead(node_part(device.id)):
                return False  # Ray notices a dead node only after its health checks fail
            return any(n.alive for i, n in self._nodes.items() if device_id(i) == node_part(device.id))

    def mark_dead(self, device_id_: str) -> None:
        node = node_part(device_id_)
        log.error("cluster node %s is gone: its models are placed again elsewhere", node)
        with self._lock:
            self._dead[node] = time.monotonic()

    def close(self) -> None:
        import ray

        if self._owned:
            ray.shutdown()


def _ray_nodes() -> list[dict[str, Any]]:
    import ray

    return ray.nodes()


def _visible_gpus() -> list[tuple[str, str, int, int]]:
    """Runs on a node: (CUDA id, name, total, free) of every GPU torch sees there."""
    import os

    from llmos.kernel.devices import probe_cuda

    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    found = probe_cuda()
    ids = visible if len(visible) == len(found) else [str(i) for i in range(len(found))]
    return [(cuda_id, d.name, d.total_bytes, d.free_bytes) for cuda_id, d in zip(ids, found)]


def probe_node_gpus(node: NodeInfo) -> list[GpuInfo]:
    """The GPUs torch sees on ``node``: a task pinned there, asking for no GPU (so that it waits for
    none) and told by NOSET_CUDA to see all of them."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(_visible_gpus).options(
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
        runtime_env={"env_vars": {NOSET_CUDA: "1"}})
    return [GpuInfo(*row) for row in ray.get(task.remote(), timeout=PROBE_S)]
