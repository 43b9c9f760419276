"""OpenAI's Batches API: ``/v1/batches`` create, list, retrieve, cancel. A batch is a ``batch`` job
(``llmos.batches``) of the caller's tenant; another tenant's batch id answers 404 like an unknown one.
Its output and error files are files (purpose ``batch_output``) read through ``/v1/files/{id}/content``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from llmos.api.batch_shapes import batch_object
from llmos.api.bounds import Metadata
from llmos.api.deps import Caller, get_caller, get_runtime
from llmos.api.files import files_of
from llmos.api.jobs import JobsDep
from llmos.batches import ENDPOINTS, BatchSpec, batch_id, job_id_of
from llmos.batches.spec import FILES_EVENT, KIND, PHASE_EVENT
from llmos.errors import Conflict, InvalidInput, NotFound
from llmos.jobs import JobInfo, JobRunner
from llmos.runtime import Runtime

router = APIRouter(prefix="/v1/batches", tags=["batches"])
CallerDep = Annotated[Caller, Depends(get_caller)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
_EVENTS = (PHASE_EVENT, FILES_EVENT, "control")
_MAX_EVENTS = 100_000


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=64, description="a file uploaded with purpose batch")
    endpoint: str = Field(description="the route every line calls: " + ", ".join(ENDPOINTS))
    completion_window: str = Field(description="24h, the only window")
    metadata: Metadata | None = None


# Plain ``def`` handlers: FastAPI runs them in its thread pool (they read the database and files).
@router.post("")
def create_batch(body: BatchIn, runtime: RuntimeDep, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    if body.endpoint not in ENDPOINTS:
        raise InvalidInput(f"endpoint {body.endpoint!r} is not supported; use one of: {', '.join(ENDPOINTS)}",
                           param="endpoint")
    if body.completion_window != "24h":
        raise InvalidInput(f"completion_window {body.completion_window!r} is not supported; use \"24h\"",
                           param="completion_window")
    try:
        file = files_of(runtime, caller.tenant).get(body.input_file_id)
    except NotFound:
        raise NotFound(f"no file {body.input_file_id!r}", param="input_file_id") from None
    if file.purpose != "batch":
        raise InvalidInput(f"file {file.id} was uploaded with purpose {file.purpose!r}; a batch reads a file of "
                           "purpose 'batch'", param="input_file_id")
    spec = BatchSpec(tenant=caller.tenant, key_id=caller.key_id, input_file_id=file.id, input_digest=file.digest,
                     endpoint=body.endpoint, completion_window=body.completion_window, metadata=body.metadata,
                     total=file.lines)
    job_id = jobs.submit(KIND, spec.model_dump(mode="json"), tenant=caller.tenant)
    return _object(jobs, jobs.get(job_id, caller.tenant))


@router.get("")
def list_batches(jobs: JobsDep, caller: CallerDep, after: Annotated[str | None, Query(max_length=64)] = None,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    """This tenant's batches, newest first; ``after`` is the last id of the previous page."""
    mine = sorted((j for j in jobs.list(caller.tenant) if j.kind == KIND),
                  key=lambda j: (j.created_at, j.id), reverse=True)
    if after is not None:
        ids = [batch_id(j.id) for j in mine]
        if after not in ids:
            raise InvalidInput(f"after: {after!r} is not a batch of this list", param="after")
        mine = mine[ids.index(after) + 1:]
    data = [_object(jobs, j) for j in mine[:limit]]
    return {"object": "list", "data": data, "has_more": len(mine) > limit,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


@router.get("/{batch}")
def retrieve_batch(batch: str, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    return _object(jobs, _job(jobs, caller, batch))


@router.post("/{batch}/cancel")
def cancel_batch(batch: str, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    info = _job(jobs, caller, batch)
    if info.state.final:
        status = batch_object(info, []).get("status")
        raise Conflict(f"batch {batch} is {status}; only a batch that has not ended can be cancelled")
    return _object(jobs, jobs.cancel(info.id, caller.tenant))


def _job(jobs: JobRunner, caller: Caller, batch: str) -> JobInfo:
    job_id = job_id_of(batch)
    try:
        info = jobs.get(job_id, caller.tenant) if job_id else None
    except NotFound:
        info = None
    if info is None or info.kind != KIND:
        raise NotFound(f"no batch {batch!r}", param="batch_id")
    return info


def _object(jobs: JobRunner, info: JobInfo) -> dict[str, Any]:
    return batch_object(info, jobs.events(info.id, limit=_MAX_EVENTS, kinds=_EVENTS))
