"""Joining a Ray cluster, and its nodes as the kernel's devices.

``connect(address)`` checks that the head answers (a TCP connect bounded by ``timeout_s``) before
``ray.init`` joins it, so a wrong address fails start-up at once with the address and the reason
instead of hanging. ``ray://HOST:PORT`` and ``HOST:PORT`` both name the head's GCS port (6379 unless
``ray start --port`` said otherwise): the daemon joins the cluster as a driver. ``auto`` joins the
cluster already running on this machine, or starts a local one.

Every alive node with CPUs is a device (``kind`` NODE); the head started with ``--num-cpus 0`` holds
the daemon alone. A node that dies is marked dead at once (the engine that saw it die reports it)
and dropped from placement (Ray's own health checks take seconds to agree); a node that joins, or a
restarted one (Ray gives it a new id), is added by ``refresh``.
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
from llmos.kernel.devices import NODE, Device

log = logging.getLogger(__name__)

NAMESPACE = "llmos"
REFRESH_S = 2.0  # how stale the node list may be when placement asks whether a node is alive
DEAD_HOLD_S = 60.0  # a node an engine saw die stays out of placement this long, whatever Ray says yet


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
                 owned: bool = True) -> None:
        self.address = address
        self._owned = owned  # whether closing leaves the cluster (not when whoever joined it still uses it)
        self._list = nodes or _ray_nodes
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeInfo] = {}
        self._dead: dict[str, float] = {}  # device id -> when an engine reported it gone
        self._read_at = float("-inf")
        self.refresh()

    def refresh(self) -> list[NodeInfo]:
        """Read the node list from Ray; returns the nodes seen alive for the first time (or again)."""
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
        return new

    def devices(self) -> list[Device]:
        """Alive nodes with CPUs, as devices of the kernel's pool."""
        with self._lock:
            nodes = [n for n in self._nodes.values() if n.alive and n.cpus > 0 and not self._held_dead(device_id(n.node_id))]
        return [self.device(n) for n in nodes]

    def _held_dead(self, device_id_: str) -> bool:
        return time.monotonic() - self._dead.get(device_id_, float("-inf")) < DEAD_HOLD_S

    @staticmethod
    def device(n: NodeInfo) -> Device:
        return Device(device_id(n.node_id), NODE, f"{n.address} ({n.cpus:g} CPU, {n.gpus:g} GPU)", n.memory, n.memory)

    def node(self, device: Device) -> NodeInfo:
        with self._lock:
            return next(n for i, n in self._nodes.items() if device_id(i) == device.id)

    def alive(self, device: Device) -> bool:
        if time.monotonic() - self._read_at > REFRESH_S:
            self.refresh()
        with self._lock:
            if self._held_dead(device.id):
                return False  # Ray notices a dead node only after its health checks fail
            return any(n.alive for i, n in self._nodes.items() if device_id(i) == device.id)

    def mark_dead(self, device_id_: str) -> None:
        log.error("cluster node %s is gone: its models are placed again elsewhere", device_id_)
        with self._lock:
            self._dead[device_id_] = time.monotonic()

    def close(self) -> None:
        import ray

        if self._owned:
            ray.shutdown()


def _ray_nodes() -> list[dict[str, Any]]:
    import ray

    return ray.nodes()
