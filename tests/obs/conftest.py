"""Apps over the real store whose settings carry the alert options a test needs, and a scrape parser."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from llmos.daemon import create_app
from llmos.engines.base import Engine
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime
from tests.api.conftest import SlowFakeEngine
from tests.conftest import make_settings

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: Any) -> Samples:
    """``GET /metrics`` parsed: (sample name, sorted labels) -> value."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0.0 when the series does not exist (yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def write_rules(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def make_app(builtin_runtime: Runtime) -> Iterator[Callable[..., TestClient]]:
    """``make_app(engine_factory=None, **settings)``: a started TestClient over the real store with fake
    engines (``client.kernel``); settings such as alerts_file / alert_interval apply to the app."""
    opened: list[tuple[TestClient, Kernel]] = []

    def build(engine_factory: Callable[[str], Engine] | None = None, **overrides: object) -> TestClient:
        overrides.setdefault("engine", "hf")  # the fakes stand in for a step engine, keyed as the transformers one
        s = make_settings(builtin_runtime.settings.home, database_url=builtin_runtime.settings.database_url,
                          **overrides)
        rt = Runtime(s, builtin_runtime.db, builtin_runtime.store)
        kernel = Kernel(s, builtin_runtime.store.registry,
                        engine_factory=engine_factory or (lambda ref: SlowFakeEngine(ref)))
        client = TestClient(create_app(rt, kernel))
        client.__enter__()
        client.kernel = kernel  # type: ignore[attr-defined]
        opened.append((client, kernel))
        return client

    yield build
    for client, kernel in opened:
        client.__exit__(None, None, None)
        kernel.close()


class Receiver:
    """A local webhook receiver: a tiny HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("content-length", 0))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()
