"""The runner's side of a batch request: a POST to the daemon's own public route over loopback, as the
key that made the batch (``llmos.auth.runner_key``), waiting out backpressure and daemon restarts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from llmos.auth.runner_key import ACTING_HEADER, runner_key
from llmos.config import Settings

Wait = Callable[[float], None]  # sleeps that long while honouring the job's pause points
RETRY_STATUSES = frozenset({429, 503})  # rate limit, quota, full queue: try the same request later
MAX_RETRY_WAIT_S = 5.0
DAEMON_GONE_S = 600.0  # a daemon unreachable this long fails the batch (its journal stays for a retry)


@dataclass(frozen=True)
class Answer:
    status_code: int
    request_id: str | None
    body: Any


def daemon_url(settings: Settings) -> str:
    """Where this llmos home's daemon listens, reached over loopback when it listens on every address."""
    host = settings.host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"


class DaemonCalls:
    def __init__(self, settings: Settings, key_id: str | None, wait: Wait, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        headers = {"Authorization": f"Bearer {runner_key(settings.home)}"}
        if key_id is not None:
            headers[ACTING_HEADER] = key_id
        self._http = httpx.Client(base_url=daemon_url(settings), headers=headers,
                                  timeout=httpx.Timeout(600.0, connect=10.0))
        self._wait = wait
        self._clock = clock

    def post(self, url: str, body: dict[str, Any]) -> Answer:
        """The daemon's answer to one request; retried while it says "later" (429 / 503) or cannot be
        reached (a restart), for at most ``DAEMON_GONE_S`` of unreachability."""
        gone_since: float | None = None
        delay = 0.1
        while True:
            try:
                r = self._http.post(url, json=body)
            except httpx.TransportError as exc:
                now = self._clock()
                gone_since = gone_since if gone_since is not None else now
                if now - gone_since > DAEMON_GONE_S:
                    raise RuntimeError(f"the daemon at {self._http.base_url} has not answered for "
                                       f"{DAEMON_GONE_S:.0f} s ({exc})") from None
                self._wait(delay)
                delay = min(delay * 2, MAX_RETRY_WAIT_S)
                continue
            gone_since = None
            if r.status_code in RETRY_STATUSES:
                self._wait(_retry_after(r))
                continue
            return Answer(r.status_code, r.headers.get("x-request-id"), _body(r))

    def close(self) -> None:
        self._http.close()


def _retry_after(r: httpx.Response) -> float:
    try:
        return min(MAX_RETRY_WAIT_S, max(0.05, float(r.headers.get("retry-after", "1"))))
    except ValueError:
        return 1.0


def _body(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return {"error": {"message": r.text[:2000], "type": "invalid_response", "code": None, "param": None}}
