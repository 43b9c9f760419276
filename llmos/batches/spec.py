"""What a batch job is given (``BatchSpec``, the job's spec) and what it reports (``BatchFiles``, an
event and its result), shared by the API that queues and shows batches and the runner that runs them."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

KIND = "batch"
ENDPOINTS: tuple[str, ...] = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/classify")
PHASE_EVENT = "batch"  # job events {"phase": "in_progress" | "finalizing"} with their times
FILES_EVENT = "batch_files"  # the output / error files, written when the batch ends (also when cancelled)
_BATCH, _JOB = "batch_", "job-"


class BatchSpec(BaseModel):
    """A ``batch`` job's spec: whose it is, what to run, and the input pinned by digest."""

    model_config = ConfigDict(extra="forbid")

    tenant: str
    key_id: str | None  # the key the runner acts for (None: auth was off when the batch was made)
    input_file_id: str
    input_digest: str  # the runner reads these bytes even if the file is deleted meanwhile
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None
    total: int = Field(ge=0)  # input lines


class BatchCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchFiles(BaseModel):
    """Where a finished (or cancelled) batch put its results, and the final counts."""

    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: BatchCounts = Field(default_factory=BatchCounts)


def batch_id(job_id: str) -> str:
    """The batch id a job shows under: ``batch_`` + the job id's hex."""
    return _BATCH + job_id.removeprefix(_JOB)


def job_id_of(batch: str) -> str | None:
    """The job behind a batch id; None for anything that is not one."""
    return _JOB + batch[len(_BATCH):] if batch.startswith(_BATCH) and len(batch) <= 64 else None


def output_file_id(job_id: str, which: str) -> str:
    """A stable file id for a batch's ``output`` or ``error`` file: finalizing twice makes one file."""
    return "file-" + hashlib.sha256(f"{job_id}/{which}".encode()).hexdigest()[:24]


def parse_spec(spec: dict[str, Any]) -> BatchSpec:
    return BatchSpec.model_validate(spec)
