"""``GET /metrics`` (Prometheus text format) and ``GET /admin/alerts``, and wiring them into an app.

Both are ordinary APIRouter routes, so router-level dependencies (authentication scopes) apply to
them like to any other route.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from llmos.kernel.core import Kernel
from llmos.jobs import JobRunner
from llmos.obs.alerts import AlertManager
from llmos.obs.collector import StateCollector
from llmos.obs.measure import Sources
from llmos.obs.metrics import Metrics, MetricsMiddleware
from llmos.obs.rules import load_rules
from llmos.runtime import Runtime

router = APIRouter(tags=["observability"])


@dataclass
class Observability:
    """An app's metrics and alert evaluator (``app.state.obs``)."""

    metrics: Metrics
    alerts: AlertManager

    def start(self) -> None:
        self.alerts.start()

    def stop(self) -> None:
        self.alerts.stop()


def install(app: FastAPI, runtime: Runtime, kernel: Kernel, jobs: JobRunner) -> Observability:
    """Add the middleware and ``app.state.obs`` (``create_app`` includes ``router`` with the others);
    a bad rule file raises ConfigError here, so the daemon refuses to start naming the rule and field."""
    s = runtime.settings
    rules, source = load_rules(s.alerts_path, required=s.alerts_file is not None)
    window = max([r.window for r in rules] + [600.0])
    metrics = Metrics(window_s=window)
    manager = AlertManager(rules, source, Sources(metrics, kernel, runtime.db), interval_s=s.alert_interval,
                           webhook=s.alert_webhook or None)
    metrics.registry.register(StateCollector(kernel, jobs, runtime.db, manager.firing))
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)  # the live list
    obs = app.state.obs = Observability(metrics, manager)
    return obs


def _obs(request: Request) -> Observability:
    return request.app.state.obs


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(generate_latest, _obs(request).metrics.registry)  # reads the database
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/admin/alerts")
def alerts(request: Request, limit: int = Query(100, ge=1, le=500)) -> dict[str, Any]:
    return _obs(request).alerts.view(limit)
