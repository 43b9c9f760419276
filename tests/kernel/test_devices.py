"""Placement across devices with an injected probe that reports fake GPUs (placement logic only)."""

from __future__ import annotations

import threading

import pytest

from llmos.config import load_settings
from llmos.engines.base import FakeEngine
from llmos.errors import WontFit
from llmos.kernel.devices import CPU, CUDA, Device, budgets, can_use, cpu_note, gpu_budget, probe_devices
from llmos.kernel.pool import DevicePool, is_out_of_memory

GB = 10**9
HOST = Device("cpu", CPU, "host memory", 64 * GB, 40 * GB)
GPU0 = Device("cuda:0", CUDA, "Fake GPU A", 24 * GB, 20 * GB)
GPU1 = Device("cuda:1", CUDA, "Fake GPU B", 80 * GB, 80 * GB)


class Loads:
    """A loader that records where each engine was built, sized by the model's name ("m5" = 5 GB)."""

    def __init__(self, oom_on: set[str] | None = None) -> None:
        self.where: list[tuple[str, str]] = []
        self.oom_on = oom_on or set()

    @staticmethod
    def size(model: str) -> int:
        return int(model.split("@")[0].lstrip("m").split("-")[0]) * GB

    def __call__(self, model: str, device: Device) -> FakeEngine:
        if device.id in self.oom_on:
            raise RuntimeError(f"CUDA out of memory. Tried to allocate 2.00 GiB on {device.id}")
        self.where.append((model, device.id))
        return FakeEngine(model, footprint_bytes=self.size(model))


def pool(loads: Loads, devices: list[Device], budget: dict[str, int], clock=None, llamacpp_gpu: bool = False) -> DevicePool:
    def can_run(model: str, device: Device) -> bool:
        return device.kind == CPU or not model.endswith("@llamacpp") or llamacpp_gpu

    kwargs = {"clock": clock} if clock is not None else {}
    return DevicePool(devices, budget, loader=loads, estimate=Loads.size, can_run=can_run,
                      wait_timeout_s=0.0, **kwargs)


def test_budgets_take_a_share_or_bytes_per_gpu_and_the_host_setting() -> None:
    assert gpu_budget(GPU0, 0.5) == 10 * GB  # a share of its free memory
    assert gpu_budget(GPU0, 8 * GB) == 8 * GB and gpu_budget(GPU0, 30 * GB) == 20 * GB  # bytes, capped
    assert budgets([HOST, GPU0, GPU1], 12 * GB, 0.9) == {"cpu": 12 * GB, "cuda:0": 18 * GB, "cuda:1": 72 * GB}
    s = load_settings(gpu_budget="20GiB", devices="cpu")
    assert s.gpu_budget == 20 * 2**30 and s.devices == "cpu"
    assert load_settings(gpu_budget="0.75").gpu_budget == 0.75


def test_the_real_probe_reports_the_host_and_the_gpus_torch_sees() -> None:
    import torch

    found = probe_devices()
    assert found[0].id == "cpu" and found[0].total_bytes > 0
    assert len(found) == 1 + (torch.cuda.device_count() if torch.cuda.is_available() else 0)


def test_models_go_to_a_gpu_with_room_first_then_the_host(clock) -> None:
    loads = Loads()
    p = pool(loads, [HOST, GPU0, GPU1], {"cpu": 10 * GB, "cuda:0": 10 * GB, "cuda:1": 6 * GB}, clock)
    for m in ("m8", "m5", "m4"):
        p.acquire(m)
    assert loads.where == [("m8", "cuda:0"), ("m5", "cuda:1"), ("m4", "cpu")]
    assert p.device_of("m5") == "cuda:1" and p.manager("cuda:0").used_bytes == 8 * GB
    states = {d.id: d for d in p.states()}
    assert [d.id for d in p.states()] == ["cuda:0", "cuda:1", "cpu"]
    assert states["cuda:0"].models == ["m8"] and states["cpu"].models == ["m4"] and states["cpu"].loads == 1
    assert {m.model: m.device for m in p.snapshot()} == {"m8": "cuda:0", "m5": "cuda:1", "m4": "cpu"}
    assert p.budget_bytes == 26 * GB and p.used_bytes == 17 * GB


def test_llamacpp_without_a_gpu_build_stays_on_the_host_and_says_so(clock) -> None:
    loads = Loads()
    p = pool(loads, [HOST, GPU0], {"cpu": 10 * GB, "cuda:0": 10 * GB}, clock)
    p.acquire("m2@llamacpp")
    p.acquire("m2")
    assert loads.where == [("m2@llamacpp", "cpu"), ("m2", "cuda:0")]
    p2 = pool(Loads(), [HOST, GPU0], {"cpu": 10 * GB, "cuda:0": 10 * GB}, clock, llamacpp_gpu=True)
    assert p2.acquire("m2@llamacpp") and p2.device_of("m2@llamacpp") == "cuda:0"
    # The real check: this machine's llama.cpp wheel is the CPU build.
    assert can_use("llamacpp", HOST) and can_use("hf", GPU0)
    note = cpu_note("llamacpp", [HOST, GPU0])
    assert note is None or "no GPU backend" in note


def test_a_model_larger_than_every_device_is_507_naming_the_largest(clock) -> None:
    p = pool(Loads(), [HOST, GPU0, GPU1], {"cpu": 10 * GB, "cuda:0": 18 * GB, "cuda:1": 12 * GB}, clock)
    with pytest.raises(WontFit) as exc:
        p.check_fits("m30")
    err = exc.value
    assert err.http_status == 507 and err.details["device"] == "cuda:0" and err.details["reason"] == "too_large"
    assert "largest device, cuda:0 (Fake GPU A), has a memory budget of 18.00 GB" in err.message
    with pytest.raises(WontFit):
        p.acquire("m30")
    assert p.used_bytes == 0 and p.snapshot() == []  # nothing reserved or half-loaded
    # A llama.cpp model (host only here) is measured against the host alone.
    with pytest.raises(WontFit) as exc:
        p.check_fits("m11@llamacpp")
    assert exc.value.details["device"] == "cpu" and "LLMOS_MEMORY_BUDGET" in exc.value.message


def test_a_gpu_out_of_memory_at_load_sends_the_model_to_the_next_device(clock) -> None:
    loads = Loads(oom_on={"cuda:0"})
    p = pool(loads, [HOST, GPU0, GPU1], {"cpu": 10 * GB, "cuda:0": 10 * GB, "cuda:1": 10 * GB}, clock)
    engine = p.acquire("m3")
    assert loads.where == [("m3", "cuda:1")] and p.device_of("m3") == "cuda:1"
    assert p.manager("cuda:0").used_bytes == 0  # the failed load left nothing counted
    p.release("m3")
    assert engine.info().model == "m3"
    everywhere = pool(Loads(oom_on={"cuda:0", "cuda:1", "cpu"}), [HOST, GPU0, GPU1],
                      {"cpu": 10 * GB, "cuda:0": 10 * GB, "cuda:1": 10 * GB}, clock)
    with pytest.raises(RuntimeError, match="out of memory"):
        everywhere.acquire("m3")  # the host's own failure is the caller's error
    assert is_out_of_memory(MemoryError()) and not is_out_of_memory(ValueError("bad weights"))


def test_eviction_is_lru_within_a_device_and_moves_are_counted(clock) -> None:
    loads = Loads()
    p = pool(loads, [HOST, GPU0], {"cpu": 4 * GB, "cuda:0": 10 * GB}, clock)
    p.acquire("m6")
    clock.advance(1)
    p.acquire("m3")  # beside m6 on the GPU
    clock.advance(1)
    p.release("m6")
    p.release("m3")
    clock.advance(1)
    p.acquire("m2")  # the host has room: nothing on the GPU is evicted for it
    assert loads.where[-1] == ("m2", "cpu") and p.manager("cuda:0").evictions == 0
    p.acquire("m5")  # no room anywhere without evicting: the GPU evicts its least recently used (m6)
    assert loads.where[-1] == ("m5", "cuda:0") and not p.is_loaded("m6") and p.is_loaded("m3")
    assert {d.id: d.evictions for d in p.states()} == {"cuda:0": 1, "cpu": 0}
    p.release("m2")
    assert p.unload("m2")
    p.release("m5")
    p.unload("m5")
    p.unload("m3")
    p.acquire("m2")  # placed again: now the GPU has room, so it moves there
    assert loads.where[-1] == ("m2", "cuda:0")
    assert {d.id: d.moves for d in p.states()} == {"cuda:0": 1, "cpu": 0}


def test_concurrent_acquires_of_one_model_share_one_load(clock) -> None:
    loads = Loads()
    p = pool(loads, [HOST, GPU0], {"cpu": 10 * GB, "cuda:0": 10 * GB}, clock)
    engines: list[FakeEngine] = []
    threads = [threading.Thread(target=lambda: engines.append(p.acquire("m4"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads.where) == 1 and len({id(e) for e in engines}) == 1
    assert p.manager("cuda:0").snapshot()[0].refcount == 8
    for _ in range(8):
        p.release("m4")
    with pytest.raises(ValueError, match="without a matching acquire"):
        p.release("m4")


def test_jobs_reserve_memory_on_a_gpu_first_then_the_host(clock) -> None:
    p = pool(Loads(), [HOST, GPU0], {"cpu": 10 * GB, "cuda:0": 6 * GB}, clock)
    assert p.reserve("job a", 5 * GB) == "cuda:0" and p.reserved_on("job a") == "cuda:0"
    assert p.reserve("job b", 5 * GB) == "cpu"  # the GPU is taken
    assert p.reserve("job c", 20 * GB) is None and p.reservations() == {"job a": 5 * GB, "job b": 5 * GB}
    p.acquire("m2")  # a model load sees the job's memory on the GPU: it goes to the host
    assert p.device_of("m2") == "cpu"
    p.unreserve("job a")
    assert p.reserved_on("job a") is None and p.manager("cuda:0").used_bytes == 0
    assert {d.id: d.reserved for d in p.states()} == {"cuda:0": {}, "cpu": {"job b": 5 * GB}}


def test_a_job_runner_sees_only_the_device_its_memory_was_reserved_on(monkeypatch) -> None:
    from llmos.jobs.process import Launch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    Launch("j1", "entry", {}, device="cuda:1").pin_device()
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    Launch("j2", "entry", {}, device="cpu").pin_device()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # a job placed on the host trains on the host
    Launch("j3", "entry", {}).pin_device()  # placed nowhere (no co-scheduler): left as it was
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_a_pool_with_no_device_yet_answers_503_until_one_joins(clock) -> None:
    from llmos.errors import Unavailable
    from llmos.kernel.devices import NODE

    loads = Loads()
    p = pool(loads, [], {}, clock)
    with pytest.raises(Unavailable, match="no device can run model 'm2' now") as exc:
        p.acquire("m2")
    assert exc.value.http_status == 503 and p.budget_bytes == 0
    node = Device("node-a", NODE, "127.0.0.1 (1 CPU, 0 GPU)", 8 * GB, 8 * GB)
    p.add_device(node, 4 * GB, loads)
    assert p.acquire("m2") and loads.where == [("m2", "node-a")] and p.budget_bytes == 4 * GB


def test_models_spread_over_equal_devices(clock) -> None:
    loads = Loads()
    p = pool(loads, [HOST, GPU0, GPU1], {"cpu": 10 * GB, "cuda:0": 10 * GB, "cuda:1": 10 * GB}, clock)
    for m in ("m4", "m3", "m2"):
        p.acquire(m)
    assert loads.where == [("m4", "cuda:0"), ("m3", "cuda:1"), ("m2", "cuda:1")]  # most free room first
