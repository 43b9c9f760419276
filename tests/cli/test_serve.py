"""The daemon as `llmos serve` starts it: a real process on a loopback port."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmos.errors import ExitCode
from llmos.runtime import Runtime
from tests.api.server import free_port, wait_healthy
from tests.waiting import BACKSTOP_S

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def daemon(builtin_runtime: Runtime) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "LLMOS_HOME": str(builtin_runtime.settings.home), "LLMOS_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "llmos", "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # never read: a pipe would fill and stall the daemon
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, alive=lambda: proc.poll() is None)
    yield url
    proc.terminate()
    proc.wait(BACKSTOP_S)


def _cli(url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMOS_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "llmos", *args, "--url", url], env=env, capture_output=True,
                          text=True, timeout=300)


def test_health_and_builtin_models(daemon: str) -> None:
    assert httpx.get(daemon + "/health").json()["status"] == "ok"
    ids = {m["id"] for m in httpx.get(daemon + "/v1/models").json()["data"]}
    assert {"smollm2-135m-instruct", "minilm-l6"} <= ids


def test_load_ps_unload_through_the_cli(daemon: str, builtin_runtime: Runtime) -> None:
    home = builtin_runtime.settings.home
    out = _cli(daemon, home, "load", "minilm-l6")
    assert out.returncode == 0 and "loaded minilm-l6:latest" in out.stdout, out.stderr
    ps = _cli(daemon, home, "ps")
    assert any(line.startswith("minilm-l6:latest ") and "MiB" in line for line in ps.stdout.splitlines())
    assert "budget" in ps.stdout
    assert "unloaded minilm-l6" in _cli(daemon, home, "unload", "minilm-l6").stdout
    missing = _cli(daemon, home, "load", "nope")
    assert missing.returncode == ExitCode.NOT_FOUND and "not found" in missing.stderr


def test_cli_says_when_no_daemon_runs(builtin_runtime: Runtime) -> None:
    out = _cli(f"http://127.0.0.1:{free_port()}", builtin_runtime.settings.home, "ps")
    assert out.returncode == ExitCode.UNAVAILABLE and "llmos serve" in out.stderr
