"""The JSON shapes jobs take over HTTP (the API and the console show the same records)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from llmos.jobs import JobEventInfo, JobInfo


def job_record(info: JobInfo) -> dict[str, Any]:
    return {
        "id": info.id, "object": "job", "kind": info.kind, "state": info.state.api, "tenant": info.tenant,
        "spec": info.spec, "progress": info.progress.to_dict(), "result": info.result,
        "result_model": info.result_model, "error": info.error, "requested": info.requested.api,
        "reason": info.reason, "checkpoint": info.checkpoint, "pid": info.pid,
        "attempts": info.attempts, "created_at": _iso(info.created_at), "started_at": _iso(info.started_at),
        "finished_at": _iso(info.finished_at),
    }


def event_record(event: JobEventInfo) -> dict[str, Any]:
    return {"id": event.id, "job_id": event.job_id, "at": _iso(event.at), "kind": event.kind, "data": event.data}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
