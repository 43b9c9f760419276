"""Queueing a job: the one place a job id is made and a spec is checked, for the daemon and for jobs
that queue jobs of their own (a tuning study's trials)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from llmos.errors import InvalidInput
from llmos.jobs.kinds import job_kind_entry
from llmos.jobs.store import JobStore


def new_job_id() -> str:
    return "job-" + uuid.uuid4().hex[:20]


def queue_job(store: JobStore, kind: str, spec: dict[str, Any] | None, tenant: str) -> str:
    """Check ``kind`` and ``spec`` and record the job as queued; returns its id."""
    job_kind_entry(kind)  # unknown kinds fail here, naming the known ones
    if spec is not None and not isinstance(spec, dict):
        raise InvalidInput("a job spec is a JSON object")
    try:
        json.dumps(spec)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"a job spec must be JSON-serialisable: {exc}") from None
    job_id = new_job_id()
    store.create(job_id, kind, dict(spec or {}), tenant)
    return job_id
