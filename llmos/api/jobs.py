"""Job routes: list, inspect, follow and control background jobs. Every route is tenant-scoped:
another tenant's job id answers 404, exactly like an unknown one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from llmos.api.bounds import Cursor, PageSize
from llmos.api.records import event_record, job_record
from llmos.api.deps import Caller, get_caller
from llmos.errors import InvalidInput
from llmos.jobs import JobRunner, JobState

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_jobs(request: Request) -> JobRunner:
    return request.app.state.jobs


JobsDep = Annotated[JobRunner, Depends(get_jobs)]


class PauseIn(BaseModel):
    free_memory: bool = False  # checkpoint and exit the runner (frees its memory and slot) instead of waiting


# Handlers are plain ``def``: FastAPI runs them in its thread pool, off the event loop, as they touch the database.
@router.get("")
def list_jobs(jobs: JobsDep, caller: CallerDep,
              state: Annotated[str | None, Query(description="only jobs in this state")] = None) -> dict[str, Any]:
    try:
        states = [JobState.from_api(state)] if state else None
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return {"object": "list", "data": [job_record(j) for j in jobs.list(caller.tenant, states)]}


@router.get("/{job_id}")
def get_job(job_id: str, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    return job_record(jobs.get(job_id, caller.tenant))


@router.get("/{job_id}/events")
def job_events(job_id: str, jobs: JobsDep, caller: CallerDep,
               since: Cursor = 0, limit: PageSize = 1000,
               kind: Annotated[list[str] | None, Query(description="only events of these kinds")] = None,
               ) -> dict[str, Any]:
    events = jobs.events(job_id, caller.tenant, since=since, limit=limit, kinds=kind)
    return {"object": "list", "data": [event_record(e) for e in events]}


@router.get("/{job_id}/logs")
def job_logs(job_id: str, jobs: JobsDep, caller: CallerDep,
             max_bytes: Annotated[int, Query(ge=1, le=64 << 20)] = 1 << 20) -> dict[str, Any]:
    return {"id": job_id, "log": jobs.logs(job_id, caller.tenant, max_bytes=max_bytes)}


@router.post("/{job_id}/pause")
def pause_job(job_id: str, jobs: JobsDep, caller: CallerDep, body: PauseIn | None = None) -> dict[str, Any]:
    free = body.free_memory if body else False
    return job_record(jobs.pause(job_id, caller.tenant, free_memory=free))


@router.post("/{job_id}/resume")
def resume_job(job_id: str, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    return job_record(jobs.resume(job_id, caller.tenant))


@router.post("/{job_id}/cancel")
def cancel_job(job_id: str, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    return job_record(jobs.cancel(job_id, caller.tenant))
