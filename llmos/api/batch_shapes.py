"""OpenAI's ``batch`` object from a ``batch`` job: its record, spec and events.

Status map: queued (or started, input not yet read) -> ``validating``; running or paused (a pause for
interactive load is a gap, not a stop) -> ``in_progress``, then ``finalizing`` while the files are
written; a cancel asked of a live runner -> ``cancelling``; succeeded -> ``completed``; failed ->
``failed``; cancelled -> ``cancelled`` (with the files of what finished before the cancel).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from llmos.batches.spec import FILES_EVENT, PHASE_EVENT, BatchCounts, BatchFiles, batch_id, parse_spec
from llmos.jobs.types import Control, JobEventInfo, JobInfo, JobState

WINDOW = timedelta(hours=24)


def _ts(at: datetime | None) -> int | None:
    return int(at.timestamp()) if at is not None else None


def batch_status(info: JobInfo, phases: dict[str, datetime]) -> str:
    final = {JobState.SUCCEEDED: "completed", JobState.FAILED: "failed", JobState.CANCELLED: "cancelled"}
    if info.state in final:
        return final[info.state]
    if info.requested == Control.CANCEL:
        return "cancelling"
    if "finalizing" in phases:
        return "finalizing"
    return "in_progress" if "in_progress" in phases and info.state != JobState.QUEUED else "validating"


def batch_object(info: JobInfo, events: list[JobEventInfo]) -> dict[str, Any]:
    spec = parse_spec(info.spec)
    phases: dict[str, datetime] = {}
    files: BatchFiles | None = None
    cancelling_at = None
    for e in events:  # oldest first: the first time of each phase, the last files written
        if e.kind == PHASE_EVENT:
            phases.setdefault(str(e.data.get("phase")), e.at)
        elif e.kind == FILES_EVENT:
            files = BatchFiles.model_validate(e.data)
        elif e.kind == "control" and e.data.get("requested") == "cancel":
            cancelling_at = cancelling_at or e.at
    status = batch_status(info, phases)
    counts = files.counts if files is not None else _progress_counts(info, spec.total)
    ended = info.finished_at if info.state.final else None
    return {
        "id": batch_id(info.id), "object": "batch", "endpoint": spec.endpoint, "errors": _errors(info),
        "input_file_id": spec.input_file_id, "completion_window": spec.completion_window, "status": status,
        "output_file_id": files.output_file_id if files else None,
        "error_file_id": files.error_file_id if files else None,
        "created_at": _ts(info.created_at), "in_progress_at": _ts(phases.get("in_progress")),
        "expires_at": _ts(info.created_at + WINDOW), "finalizing_at": _ts(phases.get("finalizing")),
        "completed_at": _ts(ended) if status == "completed" else None,
        "failed_at": _ts(ended) if status == "failed" else None, "expired_at": None,
        "cancelling_at": _ts(cancelling_at) if status in ("cancelling", "cancelled") else None,
        "cancelled_at": _ts(ended) if status == "cancelled" else None,
        "request_counts": counts.model_dump(), "metadata": spec.metadata,
        "llmos": {"job_id": info.id, "state": info.state.api, "reason": info.reason},
    }


def _progress_counts(info: JobInfo, total: int) -> BatchCounts:
    m = info.progress.metrics
    return BatchCounts(total=total, completed=int(m.get("completed", 0)), failed=int(m.get("failed", 0)))


def _errors(info: JobInfo) -> dict[str, Any] | None:
    if info.state != JobState.FAILED or not info.error:
        return None
    message = info.error.strip().splitlines()[-1][:2000]
    return {"object": "list", "data": [{"code": "batch_failed", "message": message, "param": None, "line": None}]}
