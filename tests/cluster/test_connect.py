"""Joining a cluster: an address that does not answer fails start-up with the address and the reason;
the node list as devices, a node's GPUs among them (a node list and a GPU probe injected: no cluster
and no GPU needed, placement logic only)."""

from __future__ import annotations

import socket

import pytest

from llmos.cluster.ray_cluster import (
    DEAD_HOLD_S, NOSET_CUDA, GpuInfo, NodeInfo, RayCluster, connect, device_id, gpu_env, parse_address,
)
from llmos.errors import ConfigError
from llmos.kernel.devices import NODE, NODE_GPU, budgets, can_use, llamacpp_has_gpu
from llmos.kernel.pool import DevicePool
from tests.kernel.test_devices import GB, Loads


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


def gpu_node(node_id: str, gpus: float) -> dict[str, object]:
    n = node(node_id, 4)
    n["Resources"] = {**n["Resources"], "GPU": gpus}  # type: ignore[dict-item]
    return n


def test_a_node_s_gpus_are_devices_of_their_own_placed_first_and_dying_with_their_node(
        caplog: pytest.LogCaptureFixture) -> None:
    a, b, c = "a" * 20, "b" * 20, "c" * 20
    probed: list[str] = []

    def probe(n: NodeInfo) -> list[GpuInfo]:
        probed.append(n.node_id)
        if n.node_id == c:
            raise TimeoutError("no answer")
        return [GpuInfo("0", "Fake GPU", 24 * GB, 20 * GB), GpuInfo("GPU-5f2e", "Fake GPU", 80 * GB, 80 * GB)] \
            if n.node_id == a else []

    listed = [gpu_node(a, 2), gpu_node(b, 1), gpu_node(c, 1)]
    cluster = RayCluster("ray://x:1", nodes=lambda: listed, gpus=probe)
    cluster.refresh()
    assert sorted(probed) == [a, b, c]  # once per node, however often the list is read
    devices = {d.id: d for d in cluster.devices()}
    gpu0, gpu1 = f"{device_id(a)}/cuda:0", f"{device_id(a)}/cuda:GPU-5f2e"
    assert set(devices) == {device_id(a), gpu0, gpu1, device_id(b), device_id(c)}
    assert devices[gpu0].kind == NODE_GPU and devices[gpu0].free_bytes == 20 * GB and devices[gpu0].gpu
    assert "torch sees none" in caplog.text and "could not be probed (no answer)" in caplog.text  # b, then c
    assert cluster.node(devices[gpu1]).node_id == a and cluster.node(gpu0).node_id == a
    assert gpu_env(gpu1) == {NOSET_CUDA: "1", "CUDA_VISIBLE_DEVICES": "GPU-5f2e"} and gpu_env(device_id(a)) == {}

    # GPUs first, a share of each for its budget; an engine with no GPU build goes to a node's CPUs.
    found = cluster.devices()
    budget = budgets(found, 16 * GB, 0.5)
    assert budget[gpu0] == 10 * GB and budget[device_id(a)] == 4 * GB  # a node: its Ray memory, at most
    loads = Loads()
    p = DevicePool(found, budget, loader=loads, estimate=Loads.size, wait_timeout_s=0.0,
                   can_run=lambda model, d: can_use(model.partition("@")[2] or "hf", d))  # this wheel: CPU-only llama.cpp
    assert p.devices[0].gpu and p.devices[1].gpu and p.devices[2].kind == NODE
    p.acquire("m3")
    p.acquire("m2@llamacpp")
    assert not llamacpp_has_gpu()
    assert dict(loads.where) == {"m3": gpu1, "m2@llamacpp": device_id(a)}  # the roomiest GPU; CPUs for llama.cpp

    cluster.mark_dead(gpu1)  # its engine saw the actor die: the whole node goes, GPUs and all
    assert not any(cluster.alive(devices[i]) for i in (device_id(a), gpu0, gpu1))
    assert cluster.alive(devices[device_id(b)])

    # A node that joins is probed by the node watcher's refresh, never inside placement's look.
    d = "d" * 20
    listed.append(gpu_node(d, 1))
    cluster._read_at = float("-inf")  # noqa: SLF001 - the next alive() reads the list again
    assert cluster.alive(devices[device_id(b)]) and d not in probed
    cluster.refresh()
    assert probed.count(d) == 1 and sorted(probed) == [a, b, c, d]


def test_engines_and_runners_on_a_node_gpu_see_that_gpu_alone() -> None:
    from llmos.cluster.engines import engine_options
    from llmos.cluster.jobs import RaySpawn
    from llmos.config import load_settings

    settings = load_settings(gpu_dtype="bfloat16", dtype="float32")
    base = type("Base", (), {"manifest": type("M", (), {"context_length": 2048})()})()
    on_gpu, on_cpu = (engine_options(settings, "hf", base, 4, gpu) for gpu in (True, False))
    assert (on_gpu["device"], on_gpu["dtype"], on_cpu["device"], on_cpu["dtype"]) == ("cuda:0", "bfloat16", "cpu", "float32")
    assert engine_options(settings, "llamacpp", base, 4, True)["gpu_layers"] == -1
    assert engine_options(settings, "llamacpp", base, 4, False)["gpu_layers"] == 0

    a = "a1" * 28  # Ray's node ids: 28 bytes in hex
    nodes = {device_id(a): NodeInfo(a, "127.0.0.1", 4, 1, 4 * 10**9, True)}
    spawn = RaySpawn(node_of=lambda d: nodes[d.split("/")[0]] if d.split("/")[0] in nodes else next(iter(())))
    gpu, cpu = spawn._options(f"{device_id(a)}/cuda:0"), spawn._options(device_id(a))  # noqa: SLF001
    assert gpu["num_cpus"] == 0 and gpu["scheduling_strategy"].node_id == a and not gpu["scheduling_strategy"].soft
    assert cpu["num_cpus"] == 1 and cpu["scheduling_strategy"].soft  # that node if it has a free core
    assert spawn._options(f"{device_id('f' * 56)}") == {"num_cpus": 1.0}  # noqa: SLF001 - a node gone: anywhere
    assert spawn._options("cpu") == spawn._options(None) == {"num_cpus": 1.0}  # noqa: SLF001
