"""Devices through the daemon: a probe reporting a fake GPU (placement logic only, fake engines over the
real store); /admin/ps, /metrics, the console and the 507 for a model no device can hold."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from llmos.daemon import create_app
from llmos.kernel.core import Kernel
from llmos.kernel.devices import CPU, CUDA, Device
from llmos.runtime import Runtime
from tests.api.conftest import SlowFakeEngine
from tests.conftest import make_settings
from tests.obs.conftest import scrape, value

SMOL = "smollm2-135m-instruct"
CHAT = {"model": SMOL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 3}
MB = 10**6


def fake_gpu_probe(gpu_free: int) -> list[Device]:
    return [Device("cpu", CPU, "host memory", 8000 * MB, 4000 * MB),
            Device("cuda:0", CUDA, "Fake GPU", 2 * gpu_free, gpu_free)]


@pytest.fixture
def daemon_on(builtin_runtime: Runtime) -> Iterator:  # type: ignore[type-arg]
    """``daemon_on(gpu_free, memory_budget)``: a started app whose kernel sees one fake GPU; the
    engines it builds record the device they were placed on."""
    opened: list[tuple[TestClient, Kernel]] = []

    def build(gpu_free: int, memory_budget: str) -> TestClient:
        s = make_settings(builtin_runtime.settings.home, database_url=builtin_runtime.settings.database_url,
                          engine="hf", memory_budget=memory_budget, gpu_budget=0.5)
        placed: list[tuple[str, str]] = []

        def factory(key: str, device: Device) -> SlowFakeEngine:
            placed.append((key, device.id))
            return SlowFakeEngine(key)

        kernel = Kernel(s, builtin_runtime.store.registry, placed_factory=factory,
                        device_probe=lambda: fake_gpu_probe(gpu_free))
        client = TestClient(create_app(Runtime(s, builtin_runtime.db, builtin_runtime.store), kernel))
        client.__enter__()
        client.placed = placed  # type: ignore[attr-defined]
        opened.append((client, kernel))
        return client

    yield build
    for client, kernel in opened:
        client.__exit__(None, None, None)
        kernel.close()


def test_a_model_goes_to_the_gpu_and_ps_metrics_and_console_show_it(daemon_on) -> None:  # type: ignore[no-untyped-def]
    client = daemon_on(gpu_free=4000 * MB, memory_budget="1GB")
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert [device for _, device in client.placed] == ["cuda:0"]
    ps = client.get("/admin/ps").json()
    devices = {d["id"]: d for d in ps["devices"]}
    assert set(devices) == {"cpu", "cuda:0"} and devices["cuda:0"]["budget_bytes"] == 2000 * MB
    assert devices["cpu"]["budget_bytes"] == 1000 * MB and devices["cpu"]["models"] == []
    assert [m.split(":")[0] for m in devices["cuda:0"]["models"]] == [SMOL] and devices["cuda:0"]["loads"] == 1
    assert [m["device"] for m in ps["models"] if m["loaded"]] == ["cuda:0"]
    samples = scrape(client)
    assert value(samples, "llmos_device_budget_bytes", device="cuda:0", kind="cuda") == 2000 * MB
    assert value(samples, "llmos_device_models", device="cuda:0", kind="cuda") == 1
    assert value(samples, "llmos_device_used_bytes", device="cpu", kind="cpu") == 0
    page = client.get("/console/")
    assert page.status_code == 200 and "devices-table" in page.text and "Fake GPU" in page.text


def test_a_model_no_device_can_hold_is_507_naming_the_largest_device(daemon_on) -> None:  # type: ignore[no-untyped-def]
    client = daemon_on(gpu_free=40 * MB, memory_budget="10MB")  # the GPU's budget: 20 MB; SmolLM2 is ~270 MB
    r = client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 507, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code", "param"} and err["code"] == "insufficient_memory"
    assert "largest device, cuda:0 (Fake GPU), has a memory budget of 20.0 MB" in err["message"]
    assert client.placed == [] and client.get("/admin/ps").json()["used_bytes"] == 0  # nothing half-loaded
    assert client.get("/health").status_code == 200  # the daemon keeps serving


def test_llmos_ps_prints_each_device_and_what_sits_on_it(builtin_runtime: Runtime) -> None:
    import httpx
    from typer.testing import CliRunner

    from llmos.cli import app as cli
    from llmos.cli.tables import size
    from tests.api.server import serving

    s = make_settings(builtin_runtime.settings.home, database_url=builtin_runtime.settings.database_url,
                      engine="hf", memory_budget="1GB", gpu_budget=0.5)
    kernel = Kernel(s, builtin_runtime.store.registry, placed_factory=lambda key, device: SlowFakeEngine(key),
                    device_probe=lambda: fake_gpu_probe(4000 * MB))
    try:
        with serving(create_app(Runtime(s, builtin_runtime.db, builtin_runtime.store), kernel)) as url:
            assert httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=60).status_code == 200
            r = CliRunner().invoke(cli, ["ps", "--url", url], env={"COLUMNS": "220"})
    finally:
        kernel.close()
    assert r.exit_code == 0, r.output
    rows = [line for line in r.output.splitlines() if "cuda:0" in line]
    assert any(SMOL in line for line in rows)  # the model's row names its device
    assert any("Fake GPU" in line and size(2000 * MB) in line for line in rows)  # the device's row: its budget
