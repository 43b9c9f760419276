"""OpenAI's fine-tuning API on llmos's ``train`` jobs: ``/v1/fine_tuning/jobs`` create, list, retrieve,
cancel, pause, resume, events and checkpoints. Tenant-scoped: another tenant's job answers 404.

A request is parsed here (every field OpenAI defines is honoured or refused with a 400 naming it),
then ``llmos.train.fine_tunes`` imports the files, plans and queues the job in the request, so a bad
file line, an unknown model or a task the model cannot learn is an error before any job exists.
The shapes of the answers are in ``fine_tuning_shapes``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from llmos.api.bounds import Metadata
from llmos.api.deps import Caller, get_caller, get_runtime
from llmos.api.files import files_of
from llmos.api.fine_tuning_shapes import (
    CHECKPOINT_PREFIX,
    EVENT_PREFIX,
    checkpoint_objects,
    cursor,
    event_object,
    job_object,
)
from llmos.api.jobs import JobsDep
from llmos.errors import InvalidInput
from llmos.jobs import JobRunner
from llmos.runtime import Runtime
from llmos.train import TrainEnv
from llmos.train.fine_tunes import FineTuneOrder, FineTuneRecord, FineTunes

router = APIRouter(prefix="/v1/fine_tuning", tags=["fine-tuning"])
CallerDep = Annotated[Caller, Depends(get_caller)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Auto = Literal["auto"]
MAX_EVENTS = 1_000_000  # every event of a job: a page is cut from them newest first


class HyperparametersIn(BaseModel):
    """OpenAI's three knobs; any other key must be one of llmos's hyperparameters (checked when planned)."""

    model_config = ConfigDict(extra="allow")

    n_epochs: Auto | Annotated[int, Field(ge=1, le=100)] | None = None
    batch_size: Auto | Annotated[int, Field(ge=1, le=1024)] | None = None
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] | None = None


class SupervisedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: HyperparametersIn | None = None


class MethodIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedIn | None = None
    dpo: dict[str, Any] | None = None
    reinforcement: dict[str, Any] | None = None


class FineTuningJobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=260, description="base model: name or name:tag")
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(None, min_length=1, max_length=64)
    hyperparameters: HyperparametersIn | None = None
    method: MethodIn | None = None
    suffix: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: Metadata | None = None
    integrations: list[Any] | None = None

    def order(self) -> FineTuneOrder:
        """The request as llmos's order; what llmos cannot do is a 400 naming the field."""
        if self.integrations:
            raise InvalidInput("integrations are not supported by llmos (follow a job with its events)",
                               param="integrations")
        hp = self._hyperparameters()
        known = {k: (None if v == "auto" else v) for k, v in hp.model_dump(exclude_none=True).items()
                 if k in HyperparametersIn.model_fields}
        return FineTuneOrder(model=self.model, training_file=self.training_file, validation_file=self.validation_file,
                             seed=self.seed, suffix=self.suffix, metadata=self.metadata or {},
                             extra_hyperparameters=dict(hp.model_extra or {}),
                             request=self.model_dump(mode="json", exclude_none=True), **known)

    def _hyperparameters(self) -> HyperparametersIn:
        method = self.method
        if method is not None and method.type != "supervised":
            raise InvalidInput(f"method.type {method.type!r} is not supported; llmos trains 'supervised' (LoRA for "
                               "chat files, full fine-tuning for classification and NER files)", param="method.type")
        if method is not None and (method.dpo is not None or method.reinforcement is not None):
            raise InvalidInput("method: only 'supervised' settings apply to a supervised job", param="method")
        nested = method.supervised.hyperparameters if method and method.supervised else None
        if nested is not None and self.hyperparameters is not None:
            raise InvalidInput("give hyperparameters once: in method.supervised.hyperparameters or (deprecated) "
                               "hyperparameters", param="hyperparameters")
        return nested or self.hyperparameters or HyperparametersIn()


def fine_tunes(runtime: Runtime, jobs: JobRunner, caller: Caller) -> FineTunes:
    return FineTunes(TrainEnv.of(runtime, caller.tenant), files_of(runtime, caller.tenant), jobs, runtime.db,
                     admin=caller.admin)


# Plain ``def`` handlers: FastAPI runs them in its thread pool (they read files, datasets and the database).
@router.post("/jobs")
def create_job(body: FineTuningJobIn, runtime: RuntimeDep, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    record, _ = fine_tunes(runtime, jobs, caller).create(body.order())
    return job_object(record, jobs.get(record.job_id, caller.tenant))


@router.get("/jobs")
def list_jobs(runtime: RuntimeDep, jobs: JobsDep, caller: CallerDep,
              after: Annotated[str | None, Query(max_length=64)] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict[str, Any]:
    page, more = fine_tunes(runtime, jobs, caller).list(after=after, limit=limit)
    return {"object": "list", "data": [job_object(r, jobs.get(r.job_id, caller.tenant)) for r in page],
            "has_more": more}


def _job(runtime: Runtime, jobs: JobRunner, caller: Caller, job_id: str) -> FineTuneRecord:
    return fine_tunes(runtime, jobs, caller).get(job_id)


@router.get("/jobs/{job_id}")
def get_job(job_id: str, runtime: RuntimeDep, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    record = _job(runtime, jobs, caller, job_id)
    return job_object(record, jobs.get(job_id, caller.tenant))


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, runtime: RuntimeDep, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    record = _job(runtime, jobs, caller, job_id)
    return job_object(record, jobs.cancel(job_id, caller.tenant))


@router.post("/jobs/{job_id}/pause")
def pause_job(job_id: str, runtime: RuntimeDep, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    record = _job(runtime, jobs, caller, job_id)
    return job_object(record, jobs.pause(job_id, caller.tenant))


@router.post("/jobs/{job_id}/resume")
def resume_job(job_id: str, runtime: RuntimeDep, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    record = _job(runtime, jobs, caller, job_id)
    return job_object(record, jobs.resume(job_id, caller.tenant))


@router.get("/jobs/{job_id}/events")
def job_events(job_id: str, runtime: RuntimeDep, jobs: JobsDep, caller: CallerDep,
               after: Annotated[str | None, Query(max_length=64)] = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict[str, Any]:
    """Newest first, like OpenAI's: ``after`` is the last event id of the previous page."""
    _job(runtime, jobs, caller, job_id)
    events = jobs.events(job_id, caller.tenant, limit=MAX_EVENTS)
    before = _cursor(after, EVENT_PREFIX)
    newest = [e for e in reversed(events) if before is None or e.id < before]
    return {"object": "list", "data": [event_object(e) for e in newest[:limit]], "has_more": len(newest) > limit}


@router.get("/jobs/{job_id}/checkpoints")
def job_checkpoints(job_id: str, runtime: RuntimeDep, jobs: JobsDep, caller: CallerDep,
                    after: Annotated[str | None, Query(max_length=64)] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 10) -> dict[str, Any]:
    """Resumable training checkpoints, newest first (records of progress, not servable models)."""
    record = _job(runtime, jobs, caller, job_id)
    found = checkpoint_objects(job_id, record.result_name, jobs.events(job_id, caller.tenant, limit=MAX_EVENTS))
    before = _cursor(after, CHECKPOINT_PREFIX)
    newest = [c for c in reversed(found) if before is None or cursor(c["id"], CHECKPOINT_PREFIX) < before]
    page = newest[:limit]
    return {"object": "list", "data": page, "has_more": len(newest) > limit,
            "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}


def _cursor(after: str | None, prefix: str) -> int | None:
    value = cursor(after, prefix)
    if after is not None and value is None:
        raise InvalidInput(f"after: {after!r} is not an id this list returned", param="after")
    return value
