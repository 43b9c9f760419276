"""Joining a cluster: an address that does not answer fails start-up with the address and the reason;
the node list as devices (a node list injected: no cluster needed)."""

from __future__ import annotations

import socket

import pytest

from llmos.cluster.ray_cluster import DEAD_HOLD_S, RayCluster, connect, device_id, parse_address
from llmos.errors import ConfigError
from llmos.kernel.devices import NODE


def closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: a connect is refused at once
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_that_does_not_answer_fails_naming_it_and_why() -> None:
    port = closed_port()
    with pytest.raises(ConfigError) as exc:
        connect(f"ray://127.0.0.1:{port}", timeout_s=2.0)
    assert f"cannot reach the Ray cluster at ray://127.0.0.1:{port}: Connection refused" in exc.value.message
    for bad in ("ray://nohost", "127.0.0.1:notaport", "ray://:6379", "host:70000"):
        with pytest.raises(ConfigError, match="is not ray://HOST:PORT"):
            parse_address(bad)
    assert parse_address("ray://head.local:6379") == ("head.local", 6379)


def node(node_id: str, cpus: float, alive: bool = True) -> dict[str, object]:
    return {"NodeID": node_id, "Alive": alive, "NodeManagerAddress": "127.0.0.1",
            "Resources": {"CPU": cpus, "memory": 4e9}}


def test_alive_nodes_with_cpus_are_devices_and_a_node_seen_dying_leaves_placement() -> None:
    nodes = [node("h" * 20, 0), node("a" * 20, 1), node("b" * 20, 2), node("c" * 20, 1, alive=False)]
    cluster = RayCluster("ray://x:1", nodes=lambda: nodes)
    devices = cluster.devices()
    assert [d.id for d in devices] == [device_id("a" * 20), device_id("b" * 20)]  # not the CPU-less head, not dead
    assert all(d.kind == NODE and d.total_bytes == 4_000_000_000 for d in devices)
    a, b = devices
    assert cluster.alive(a) and cluster.node(b).cpus == 2
    cluster.mark_dead(a.id)  # an engine saw its actor die: out now, whatever Ray's list says yet
    assert not cluster.alive(a) and cluster.alive(b) and DEAD_HOLD_S > 0
    nodes[2] = node("b" * 20, 2, alive=False)
    cluster.refresh()
    assert [d.id for d in cluster.devices()] == []
