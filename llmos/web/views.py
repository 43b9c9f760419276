"""What the console pages show, gathered from the store, kernel, job runner and dataset registry.

Plain functions from daemon state to small typed records; the templates only lay them out.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select

from llmos.api.records import event_record, job_record
from llmos.db.tables import RequestLog
from llmos.kernel.core import Kernel, ModelState
from llmos.jobs import JobRunner
from llmos.runtime import Runtime
from llmos.store.manifest import ModelInfo
from llmos.web.session import ConsoleUser

REPORT_FILE = "eval_report.json"
CURVE_FILE = "loss_curve.png"
MAX_REPORT_BYTES = 2 << 20


@dataclass
class ModelRow:
    info: ModelInfo
    has_report: bool
    has_curve: bool
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelDetail:
    row: ModelRow
    versions: list[ModelInfo]
    ancestry: list[str]  # parent refs, nearest first
    children: list[str]
    report: dict[str, Any] | None


def visible_models(runtime: Runtime, tenant: str) -> list[ModelInfo]:
    """Public models and this tenant's private ones (as it names them)."""
    return runtime.store.registry.list(tenant=tenant)


def model_row(info: ModelInfo) -> ModelRow:
    metrics = info.manifest.lineage.metrics or {}
    return ModelRow(info, info.manifest.file(REPORT_FILE) is not None, info.manifest.file(CURVE_FILE) is not None,
                    metrics if isinstance(metrics, dict) else {})


def model_detail(runtime: Runtime, tenant: str, ref: str) -> ModelDetail | None:
    models = visible_models(runtime, tenant)
    by_ref = {i.ref: i for i in models}
    info = by_ref.get(ref) or by_ref.get(f"{ref}:latest")
    if info is None:
        return None
    versions = [i for i in models if i.name == info.name]
    children = [i.ref for i in models if _parent_ref(i) == info.ref]
    return ModelDetail(model_row(info), versions, _ancestry(info, by_ref), children, read_report(runtime, info))


def _parent_ref(info: ModelInfo) -> str | None:
    """``name:tag`` of the model this one was made from (the manifest keeps ``name:tag@digest``)."""
    base = info.manifest.lineage.base
    parent = info.manifest.parent or (base.ref if base else None)
    return parent.split("@", 1)[0] if parent else None


def _ancestry(info: ModelInfo, by_ref: dict[str, ModelInfo]) -> list[str]:
    chain: list[str] = []
    parent = _parent_ref(info)
    while parent and parent not in chain and len(chain) < 16:
        chain.append(parent)
        nxt = by_ref.get(parent)
        parent = _parent_ref(nxt) if nxt else None
    return chain


def model_file(runtime: Runtime, info: ModelInfo, name: str) -> bytes | None:
    """One small file of a model (report, curve), read from its verified blob."""
    entry = info.manifest.file(name)
    if entry is None or entry.size > MAX_REPORT_BYTES:
        return None
    return runtime.store.blobs.open_verified(entry.digest).read_bytes()


def read_report(runtime: Runtime, info: ModelInfo) -> dict[str, Any] | None:
    data = model_file(runtime, info, REPORT_FILE)
    if data is None:
        return None
    try:
        report = json.loads(data)
    except ValueError:
        return {"error": "the stored evaluation report is not valid JSON"}
    return report if isinstance(report, dict) else {"report": report}


def report_sections(report: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The headline metrics (a flat table) and the rest of the report as indented JSON."""
    metrics = report.get("metrics") if isinstance(report.get("metrics"), dict) else {}
    rest = {k: v for k, v in report.items() if k != "metrics"}
    training = rest.get("training")
    if isinstance(training, dict):  # the loss history is drawn as a chart, not printed
        rest["training"] = {k: v for k, v in training.items() if k != "loss_history"}
    return metrics, json.dumps(rest, indent=2, default=str)


# -- jobs ------------------------------------------------------------------------------------------
def job_payload(jobs: JobRunner, job_id: str, tenant: str, log_bytes: int = 16_384) -> dict[str, Any]:
    """A job with its loss curve points (from progress events) and the tail of its log."""
    info = jobs.get(job_id, tenant)
    events = jobs.events(job_id, tenant, limit=10_000)
    loss: list[list[float]] = []
    evals: list[list[float]] = []
    for e in events:
        data = e.data or {}
        step, metrics = data.get("step"), data.get("metrics") or {}
        if step is None:
            continue
        if e.kind == "progress" and "loss" in metrics:
            loss.append([step, metrics["loss"]])
        elif e.kind == "eval" and "loss" in data:  # the training loop's validation event
            evals.append([step, data["loss"]])
    recent = [event_record(e) for e in events if e.kind != "progress"][-50:]
    return {"job": job_record(info), "loss": loss, "eval_loss": evals, "events": recent,
            "log": jobs.logs(job_id, tenant, max_bytes=log_bytes)}


# -- the queue, loaded models and live numbers -----------------------------------------------------
def visible_states(kernel: Kernel, user: ConsoleUser) -> list[ModelState]:
    """Loaded / queued models an admin sees all of (by key); anyone else sees public models and its own
    private ones, named as it names them: never another tenant's."""
    states = kernel.ps()
    if user.allows("admin"):
        return states
    mine = f"{user.tenant}/"
    return [replace(s, model=s.model.removeprefix(mine)) for s in states
            if s.model.startswith(mine) or "/" not in s.model]


def ps_payload(kernel: Kernel, user: ConsoleUser) -> dict[str, Any]:
    """The overview's table; the memory budget is the machine's business: admins only."""
    res = kernel.resources
    admin = user.allows("admin")
    return {"budget_bytes": res.budget_bytes if admin else None, "used_bytes": res.used_bytes if admin else None,
            "models": [asdict(s) for s in visible_states(kernel, user)],
            "devices": [asdict(d) for d in kernel.devices()] if admin else []}


def stats_payload(runtime: Runtime, kernel: Kernel, user: ConsoleUser, window_s: float = 60.0) -> dict[str, Any]:
    """One sample for the live charts: queues, memory (admins), token rate, and this tenant's recent requests."""
    tenant, admin = user.tenant, user.allows("admin")
    states = visible_states(kernel, user)
    since = datetime.now(timezone.utc) - timedelta(seconds=window_s)
    with runtime.db.session() as s:
        q = select(func.count(), func.coalesce(func.sum(RequestLog.completion_tokens), 0),
                   func.avg(RequestLog.ttft_ms)).where(RequestLog.created_at >= since, RequestLog.tenant == tenant)
        n, tokens, ttft = s.execute(q).one()
        errors = s.scalar(select(func.count()).where(RequestLog.created_at >= since, RequestLog.tenant == tenant,
                                                     RequestLog.status >= 500))
    return {"t": time.time(),
            "waiting": sum(m.queue.waiting for m in states if m.queue),
            "running": sum(m.queue.running for m in states if m.queue),
            "tokens_per_s": round(sum(m.queue.tokens_per_s for m in states if m.queue), 2),
            "used_mib": round(kernel.resources.used_bytes / 2**20, 1) if admin else None,
            "budget_mib": round(kernel.resources.budget_bytes / 2**20, 1) if admin else None,
            "loaded": sum(1 for m in states if m.loaded),
            "requests_per_min": int(n or 0) * 60.0 / window_s, "errors_per_min": int(errors or 0) * 60.0 / window_s,
            "completion_tokens_per_min": int(tokens or 0) * 60.0 / window_s,
            "mean_ttft_ms": round(float(ttft), 1) if ttft is not None else None}
