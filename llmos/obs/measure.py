"""What each kind of alert rule measures, from the app's rolling windows and the kernel's state.

``measure`` returns the rule's current value, or None when there is too little data to judge (fewer
than ``min_requests`` in the window): a rule without data never fires, and a firing one resolves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmos.db.engine import Database
from llmos.kernel.core import Kernel
from llmos.feedback import canary_signals as canary
from llmos.obs.collector import failed_jobs_since
from llmos.obs.metrics import HttpEvent, InferenceEvent, Metrics
from llmos.obs.rules import CountRule, ErrorRateRule, LatencyRule, MemoryRule, Rule


@dataclass
class Sources:
    """Everything a rule may read."""

    metrics: Metrics
    kernel: Kernel
    db: Database


@dataclass(frozen=True)
class Measurement:
    value: float | None
    detail: str  # for people: what the value is made of

    def breaches(self, threshold: float) -> bool:
        return self.value is not None and self.value > threshold


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (the value at or below which ``q`` of the values lie)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def measure(rule: Rule, src: Sources, now: float) -> Measurement:
    start = now - rule.window
    if isinstance(rule, LatencyRule):
        return _latency(rule, src.metrics.inference.since(start))
    if isinstance(rule, ErrorRateRule):
        return _error_rate(rule, src.metrics.http.since(start))
    if isinstance(rule, MemoryRule):
        res = src.kernel.resources
        ratio = res.used_bytes / res.budget_bytes if res.budget_bytes else 0.0
        return Measurement(ratio, f"{res.used_bytes} of {res.budget_bytes} bytes")
    return _count(rule, src, start)


def _latency(rule: LatencyRule, events: list[InferenceEvent]) -> Measurement:
    def keep(e: InferenceEvent) -> bool:
        names = {e.model, e.model.split("/", 1)[-1]}  # a rule names a model with or without its tenant
        return ((rule.model is None or rule.model in names or f"{rule.model}:latest" in names)
                and (rule.route is None or e.route == rule.route))

    if rule.kind == "ttft":
        values = [e.ttft_s for e in events if keep(e) and e.ttft_s is not None]
    else:
        values = [e.latency_s for e in events if keep(e)]
    if len(values) < rule.min_requests:
        return Measurement(None, f"{len(values)} request(s) in the window; {rule.min_requests} needed")
    q = quantile(values, rule.quantile)  # type: ignore[arg-type]
    return Measurement(q, f"p{rule.quantile * 100:g} of {len(values)} request(s) = {q:.3f} s")


def _error_rate(rule: ErrorRateRule, events: list[HttpEvent]) -> Measurement:
    scoped = [e for e in events if e.route.startswith(rule.path_prefix)]
    if len(scoped) < rule.min_requests:
        return Measurement(None, f"{len(scoped)} response(s) in the window; {rule.min_requests} needed")
    errors = sum(1 for e in scoped if e.status >= 500)
    return Measurement(errors / len(scoped), f"{errors} of {len(scoped)} response(s) were 5xx")


def _count(rule: CountRule, src: Sources, start: float) -> Measurement:
    if rule.kind == "queue_full":
        n = sum(1 for e in src.metrics.http.since(start) if e.status == 503)
        return Measurement(float(n), f"{n} response(s) with 503 in the window")
    if rule.kind == "job_failed":
        n = failed_jobs_since(src.db, rule.window)
        return Measurement(float(n), f"{n} job(s) failed in the window")
    rolled = canary.outcomes_since(start, "rolled_back")
    names = ", ".join(sorted({f"{o.model}:{o.version}" for o in rolled}))
    return Measurement(float(len(rolled)), f"{len(rolled)} canary rollback(s) in the window" +
                       (f" ({names})" if names else ""))
