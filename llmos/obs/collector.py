"""Gauges that mirror state, read at scrape time: queues, loaded models, memory, jobs, feedback, canaries.

A custom Collector rather than gauges updated in place: the kernel, the job runner and the database
are the truth, and reading them when Prometheus asks can never drift from it. Each family is read
on its own; a family that fails (a locked database, say) is logged and left out of that scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from llmos.db.engine import Database
from llmos.db.tables import Feedback, Job, RequestLog, utcnow
from llmos.kernel.core import Kernel
from llmos.jobs import JobRunner
from llmos.jobs.types import API_STATES, JobState
from llmos.feedback import canary_signals as canary

log = logging.getLogger("llmos.obs")
LIVE_JOB_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.PAUSED)


class StateCollector(Collector):
    def __init__(self, kernel: Kernel, jobs: JobRunner, db: Database,
                 firing: Callable[[], list[tuple[str, str]]] | None = None) -> None:
        self.kernel = kernel
        self.jobs = jobs
        self.db = db
        self.firing = firing or (lambda: [])

    def collect(self) -> Iterator[Metric]:
        for family in (self._models, self._jobs, self._feedback, self._canaries, self._alerts):
            try:
                yield from family()
            except Exception:  # noqa: BLE001 - one unreadable family must not fail the whole scrape
                log.exception("metrics: reading %s failed", family.__name__.strip("_"))

    def _models(self) -> list[Metric]:
        res = self.kernel.resources
        budget = GaugeMetricFamily("llmos_memory_budget_bytes", "Memory budget for loaded models")
        budget.add_metric([], res.budget_bytes)
        used = GaugeMetricFamily("llmos_memory_used_bytes", "Memory held by loaded models (and loads under way)")
        used.add_metric([], res.used_bytes)
        loaded = GaugeMetricFamily("llmos_model_loaded", "1 when the model is loaded", labels=["model", "engine"])
        memory = GaugeMetricFamily("llmos_model_memory_bytes", "Measured footprint of a loaded model",
                                   labels=["model", "engine"])
        in_use = GaugeMetricFamily("llmos_model_in_use", "Holders of a loaded model now", labels=["model", "engine"])
        waiting = GaugeMetricFamily("llmos_queue_waiting", "Requests waiting in a model's queue", labels=["model", "engine"])
        running = GaugeMetricFamily("llmos_queue_running", "Sequences a model is decoding now", labels=["model", "engine"])
        capacity = GaugeMetricFamily("llmos_queue_capacity", "Waiting requests a model's queue takes before 503",
                                     labels=["model", "engine"])
        tps = GaugeMetricFamily("llmos_model_tokens_per_second", "Recent output rate of a model", labels=["model", "engine"])
        rejected = CounterMetricFamily("llmos_queue_rejected", "Requests turned away because the queue was full",
                                       labels=["model", "engine"])
        for s in self.kernel.ps():
            loaded.add_metric([s.model, s.engine], 1.0 if s.loaded else 0.0)
            memory.add_metric([s.model, s.engine], s.footprint_bytes)
            in_use.add_metric([s.model, s.engine], s.in_use)
            if s.queue is not None:
                waiting.add_metric([s.model, s.engine], s.queue.waiting)
                running.add_metric([s.model, s.engine], s.queue.running)
                capacity.add_metric([s.model, s.engine], s.queue.max_queue)
                tps.add_metric([s.model, s.engine], s.queue.tokens_per_s)
                rejected.add_metric([s.model, s.engine], s.queue.rejected)
        return [budget, used, loaded, memory, in_use, waiting, running, capacity, tps, rejected, *self._devices()]

    def _devices(self) -> list[Metric]:
        """Per device (the host, each GPU): its budget, what is held, and its placement counters."""
        budget = GaugeMetricFamily("llmos_device_budget_bytes", "Memory budget for models on a device",
                                   labels=["device", "kind"])
        used = GaugeMetricFamily("llmos_device_used_bytes", "Memory held on a device (models, loads, jobs)",
                                 labels=["device", "kind"])
        models = GaugeMetricFamily("llmos_device_models", "Models loaded on a device", labels=["device", "kind"])
        loads = CounterMetricFamily("llmos_device_loads", "Engines loaded onto a device", labels=["device", "kind"])
        evictions = CounterMetricFamily("llmos_device_evictions", "Idle engines evicted from a device for room",
                                        labels=["device", "kind"])
        moves = CounterMetricFamily("llmos_device_moves", "Models loaded on a device that last sat on another",
                                    labels=["device", "kind"])
        placed = GaugeMetricFamily("llmos_model_device", "1 for the device a loaded model sits on",
                                   labels=["model", "engine", "device"])
        for d in self.kernel.devices():
            labels = [d.id, d.kind]
            budget.add_metric(labels, d.budget_bytes)
            used.add_metric(labels, d.used_bytes)
            models.add_metric(labels, len(d.models))
            loads.add_metric(labels, d.loads)
            evictions.add_metric(labels, d.evictions)
            moves.add_metric(labels, d.moves)
        for s in self.kernel.ps():
            if s.device is not None:
                placed.add_metric([s.model, s.engine, s.device], 1.0)
        return [budget, used, models, loads, evictions, moves, placed]

    def _jobs(self) -> list[Metric]:
        states = GaugeMetricFamily("llmos_jobs", "Background jobs by kind and state", labels=["kind", "state"])
        with self.db.session() as s:
            rows = s.execute(select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)).all()
        for kind, state, n in rows:
            states.add_metric([kind, API_STATES.get(JobState(state), str(state))], n)
        progress = GaugeMetricFamily("llmos_job_progress_ratio", "Steps done / total of live jobs (0..1)",
                                     labels=["job", "kind", "state"])
        step = GaugeMetricFamily("llmos_job_step", "Steps done by live jobs", labels=["job", "kind", "state"])
        for job in self.jobs.list(states=LIVE_JOB_STATES):
            labels = [job.id, job.kind, job.state.api]
            step.add_metric(labels, job.progress.step)
            if job.progress.total:
                progress.add_metric(labels, min(1.0, job.progress.step / job.progress.total))
        return [states, progress, step]

    def _feedback(self) -> list[Metric]:
        rating = case((Feedback.rating > 0, "up"), (Feedback.rating < 0, "down"), else_="none")
        q = (select(RequestLog.model, rating, func.count(), func.count(Feedback.correction))
             .join(RequestLog, RequestLog.id == Feedback.request_id).group_by(RequestLog.model, rating))
        with self.db.session() as s:
            rows = s.execute(q).all()
        total = CounterMetricFamily("llmos_feedback", "Feedback received, by the model that answered and rating "
                                    "(up: > 0, down: < 0, none: no rating)", labels=["model", "rating"])
        corrections = CounterMetricFamily("llmos_feedback_corrections", "Feedback that carried a correction",
                                          labels=["model"])
        by_model: dict[str, int] = {}
        for model, r, n, n_corr in rows:
            total.add_metric([model, r], n)
            by_model[model] = by_model.get(model, 0) + n_corr
        for model, n in by_model.items():
            corrections.add_metric([model], n)
        return [total, corrections]

    def _canaries(self) -> list[Metric]:
        shares = GaugeMetricFamily("llmos_canary_share", "Share of a name's traffic served by its canary version",
                                   labels=["model", "version"])
        for c in canary.canary_shares():
            shares.add_metric([c.model, c.version], c.share)
        outcomes = CounterMetricFamily("llmos_canary_outcomes", "Canaries ended, by outcome",
                                       labels=["model", "outcome"])
        for (model, outcome), n in canary.outcome_totals().items():
            outcomes.add_metric([model, outcome], n)
        return [shares, outcomes]

    def _alerts(self) -> list[Metric]:
        firing = GaugeMetricFamily("llmos_alerts_firing", "1 for each alert rule firing now",
                                   labels=["alert", "severity"])
        for name, severity in self.firing():
            firing.add_metric([name, severity], 1.0)
        return [firing]


def failed_jobs_since(db: Database, seconds: float) -> int:
    """Jobs that ended failed in the last ``seconds`` (what the job_failed rule counts)."""
    cutoff = utcnow() - timedelta(seconds=seconds)
    with db.session() as s:
        q = select(func.count()).select_from(Job).where(Job.state == int(JobState.FAILED), Job.finished_at >= cutoff)
        return int(s.scalar(q) or 0)
