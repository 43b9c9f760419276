"""Metrics the daemon records as things happen: HTTP responses and inference requests.

Each app owns one ``Metrics`` (its own CollectorRegistry, so many apps in one process never clash).
Besides the Prometheus instruments it keeps short rolling windows of recent events, which the alert
evaluator reads: the daemon judges its rules itself, with no Prometheus server.

The request log (``llmos.api.reqlog.record``) reports each inference call through ``observe_entry``;
it finds the app's ``Metrics`` in a context variable that the HTTP middleware sets for the request,
so the many route handlers that write log rows need no extra argument.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import BaseRoute, Match

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WINDOW_MAX_EVENTS = 100_000  # per window; bounds memory under heavy traffic (older events drop first)

_current: ContextVar["Metrics | None"] = ContextVar("llmos_metrics", default=None)


@dataclass(frozen=True)
class HttpEvent:
    at: float
    method: str
    route: str  # the route template, e.g. /v1/jobs/{job_id}; "unmatched" for unknown paths
    status: int


@dataclass(frozen=True)
class InferenceEvent:
    at: float
    route: str  # request-log route: chat, completion, embeddings, classify, tag
    model: str
    status: int
    latency_s: float
    ttft_s: float | None


class Rolling:
    """Events of the last ``max_age_s`` seconds, oldest first; thread-safe."""

    def __init__(self, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._events: deque[Any] = deque(maxlen=WINDOW_MAX_EVENTS)
        self._lock = threading.Lock()

    def add(self, event: Any) -> None:
        with self._lock:
            self._events.append(event)
            self._prune(event.at)

    def since(self, t: float) -> list[Any]:
        with self._lock:
            self._prune(self._clock())
            return [e for e in self._events if e.at >= t]

    def _prune(self, now: float) -> None:
        while self._events and self._events[0].at < now - self.max_age_s:
            self._events.popleft()


class Metrics:
    """The app's registry, its event instruments, and the rolling windows the alerts read."""

    def __init__(self, window_s: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        self.http = Rolling(window_s, clock)
        self.inference = Rolling(window_s, clock)
        r = self.registry
        self.http_requests = Counter("llmos_http_requests", "HTTP responses by method, route template and status",
                                     ["method", "route", "status"], registry=r)
        self.requests = Counter("llmos_requests", "Inference requests (one per request-log row) by route, "
                                "model and status", ["route", "model", "status"], registry=r)
        self.latency = Histogram("llmos_request_latency_seconds", "End-to-end latency of inference requests",
                                 ["route", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("llmos_time_to_first_token_seconds", "Time from arrival to the first generated token",
                              ["route", "model"], buckets=TTFT_BUCKETS, registry=r)
        self.generated = Counter("llmos_generated_tokens", "Tokens generated (rate() gives tokens/s)",
                                 ["model"], registry=r)
        self.prompt = Counter("llmos_prompt_tokens", "Prompt tokens of generation requests", ["model"], registry=r)
        self.batch_requests = Counter("llmos_batch_requests", "Requests of batch jobs the daemon answered, by route "
                                      "and status (kept out of the latency and TTFT histograms)",
                                      ["route", "status"], registry=r)

    def observe_http(self, method: str, route: str, status: int) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http.add(HttpEvent(self.clock(), method, route, status))

    def observe_batch_request(self, route: str, status: int) -> None:
        self.batch_requests.labels(route, str(status)).inc()

    def observe_request(self, route: str, model: str, status: int, latency_s: float, ttft_s: float | None,
                        prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        self.requests.labels(route, model, str(status)).inc()
        self.latency.labels(route, model).observe(latency_s)
        if ttft_s is not None:
            self.ttft.labels(route, model).observe(ttft_s)
        if completion_tokens:
            self.generated.labels(model).inc(completion_tokens)
        if prompt_tokens and route in ("chat", "completion"):
            self.prompt.labels(model).inc(prompt_tokens)
        self.inference.add(InferenceEvent(self.clock(), route, model, status, latency_s, ttft_s))


def current() -> Metrics | None:
    """The metrics of the app serving the current request, if any."""
    return _current.get()


class MetricsMiddleware:
    """Pure ASGI middleware (streams pass through untouched): counts every HTTP response by its route
    template and status, and makes the app's ``Metrics`` current for the request's handlers."""

    def __init__(self, app: Any, metrics: Metrics, routes: list[BaseRoute] | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes or []  # to name requests refused before routing (e.g. 401 from auth)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}  # an exception that escapes every handler ends as a 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        token = _current.set(self.metrics)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            _current.reset(token)
            self.metrics.observe_http(scope.get("method", "GET"), self._template(scope), status["code"])

    def _template(self, scope: dict[str, Any]) -> str:
        """The route template (bounded label values, unlike raw paths); "unmatched" for unknown paths."""
        route = scope.get("route")
        if route is None:  # answered before the router ran: find the route it was meant for
            route = next((r for r in self.routes if r.matches(scope)[0] != Match.NONE), None)
        return getattr(route, "path", None) or "unmatched"
