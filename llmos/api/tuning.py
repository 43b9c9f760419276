"""Hyperparameter search routes: ``POST /v1/tuning/jobs`` checks a study and queues a ``tune`` job.

The request is a fine-tuning request (its ``hyperparameters`` fixed for every trial) plus the search:
``space`` (knob -> ``"low:high[:log]"``, ``"a,b,c"``, a list, or ``{low, high, log}`` / ``{choices}``),
``trials``, ``sampler`` and ``pruner``. Everything is checked before anything is queued; the job's
trials are ``train`` jobs listed by ``GET /v1/tuning/jobs/{id}/trials``; its result names the model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from llmos.api.records import job_record
from llmos.api.deps import Caller, get_caller, get_runtime
from llmos.api.jobs import JobsDep
from llmos.runtime import Runtime
from llmos.train.hpo import TuneSpec, plan_tuning
from llmos.train.plan import TrainEnv

router = APIRouter(prefix="/v1/tuning", tags=["tuning"])
CallerDep = Annotated[Caller, Depends(get_caller)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
JOB_KIND = "tune"


class TuneIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="base model: name or name:tag")
    dataset: str = Field(min_length=1, description="dataset: name or name@version")
    task: str | None = Field(None, description="classify, tag or sft (default: the dataset's)")
    method: str | None = Field(None, description="full, lora, prompt or prefix (default: full; lora for sft)")
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="fixed for every trial")
    space: dict[str, Any] = Field(default_factory=dict, description="searched knobs (replace the defaults)")
    trials: Any = Field(8, description="trials to run")
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    startup_trials: Any = Field(2, description="trials run to the end before pruning starts")
    name: str | None = Field(None, description="result name[:tag] (default: <model>-<dataset>, versioned)")


def spec_of(body: TuneIn, caller: Caller) -> TuneSpec:
    data = body.model_dump()
    data.update(base=data.pop("model"), tenant=caller.tenant, publish=caller.admin)
    return TuneSpec.parse(data)


@router.post("/jobs")
def create_job(body: TuneIn, jobs: JobsDep, runtime: RuntimeDep, caller: CallerDep) -> dict[str, Any]:
    plan = plan_tuning(TrainEnv.of(runtime, caller.tenant), spec_of(body, caller))
    job_id = jobs.submit(JOB_KIND, plan.spec.model_dump(mode="json"), tenant=caller.tenant)
    return {**job_record(jobs.get(job_id, caller.tenant)), "plan": plan.summary()}


@router.get("/jobs")
def list_jobs(jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    return {"object": "list", "data": [job_record(j) for j in jobs.list(caller.tenant) if j.kind == JOB_KIND]}


@router.get("/jobs/{job_id}")
def get_job(job_id: str, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    return job_record(jobs.get(job_id, caller.tenant))


@router.get("/jobs/{job_id}/trials")
def list_trials(job_id: str, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    """The tuning job's trial jobs, by trial number."""
    jobs.get(job_id, caller.tenant)
    found = [j for j in jobs.list(caller.tenant) if (j.spec.get("trial") or {}).get("of") == job_id]
    found.sort(key=lambda j: j.spec["trial"]["number"])
    return {"object": "list", "data": [job_record(j) for j in found]}
