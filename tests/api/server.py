"""Run an app on a real loopback port in a background thread, for clients that need a socket."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from tests.waiting import BACKSTOP_S, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll ``url``/health until it answers 200; fail at once if ``alive()`` turns false."""

    def healthy() -> bool:
        try:
            return httpx.get(url + "/health", timeout=BACKSTOP_S).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(healthy, f"{url} healthy", ended=lambda: None if alive() else "the server exited", interval=0.05)


@contextmanager
def serving(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """``app`` on ``port`` (default: a free one); a batch job's runner reaches its daemon at the port
    in the daemon's settings, so a test that runs batches passes that port."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, alive=thread.is_alive)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(BACKSTOP_S)
