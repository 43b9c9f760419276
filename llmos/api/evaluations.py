"""Evaluation routes: ``POST /v1/evaluations`` checks a model against a dataset and queues an
``evaluate`` job (what ``llmos eval MODEL DATASET`` does when a daemon runs): the scoring then runs in a
runner process, under the memory budget and yielding to traffic like any job. The job's result holds
the report (``reports[MODEL][SPLIT]``, the same report ``llmos eval`` prints in-process)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from llmos.api.bounds import NAME_MAX, ModelName
from llmos.api.deps import Caller, get_caller, get_runtime
from llmos.api.jobs import JobsDep
from llmos.api.records import job_record
from llmos.data.registry import Datasets
from llmos.feedback.evaluate_job import KIND, eval_spec
from llmos.runtime import Runtime

router = APIRouter(prefix="/v1/evaluations", tags=["evaluations"])
CallerDep = Annotated[Caller, Depends(get_caller)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


class EvaluationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName = Field(description="stored model: name or name:tag")
    dataset: str = Field(min_length=1, max_length=NAME_MAX, description="dataset: name or name@version")
    split: str | None = Field(None, max_length=64, description="split to score (default: test, else validation, "
                              "else all rows)")
    max_rows: int | None = Field(None, ge=1, le=1_000_000, description="score at most this many rows")


# Plain ``def`` handlers: FastAPI runs them in its thread pool (they read the database).
@router.post("")
def create_evaluation(body: EvaluationIn, jobs: JobsDep, runtime: RuntimeDep, caller: CallerDep) -> dict[str, Any]:
    registry = runtime.store.registry
    registry.get(body.model, tenant=caller.tenant)  # another tenant's private model is not found
    spec = eval_spec(registry, Datasets.of(runtime, caller.tenant), body.model, body.dataset, body.split,
                     body.max_rows, caller.tenant)
    job_id = jobs.submit(KIND, spec.model_dump(mode="json"), tenant=caller.tenant)
    return job_record(jobs.get(job_id, caller.tenant))


@router.get("")
def list_evaluations(jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    return {"object": "list", "data": [job_record(j) for j in jobs.list(caller.tenant) if j.kind == KIND]}
