"""Fine-tuning routes: ``POST /v1/training/jobs`` checks a request and queues a ``train`` job.

llmos's shape (``model`` + ``dataset`` by name) is not OpenAI's fine-tuning API (``training_file``,
job objects with ``status``, ``/cancel``, ``/events``), so it lives under its own path; OpenAI's
shape is served by ``fine_tuning.py`` under ``/v1/fine_tuning``, over the same ``train`` jobs.

Everything a user can get wrong (unknown model or dataset, a task the model cannot learn, a bad
hyperparameter, too few rows) is answered here, before anything is queued; the plan made here is
stored in the job's spec and is what the runner trains on. Progress, pause, resume
and cancel go through the generic ``/v1/jobs/{id}`` routes; the job's result names the new model.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from llmos.api.records import job_record
from llmos.api.deps import Caller, get_caller, get_runtime
from llmos.api.jobs import JobsDep
from llmos.runtime import Runtime
from llmos.train import TrainEnv, TrainSpec, plan_training

router = APIRouter(prefix="/v1/training", tags=["fine-tuning"])
CallerDep = Annotated[Caller, Depends(get_caller)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
JOB_KIND = "train"


class FineTuneIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="base model: name or name:tag")
    dataset: str = Field(min_length=1, description="dataset: name or name@version")
    task: str | None = Field(None, description="classify, tag or sft (default: the dataset's)")
    method: str | None = Field(None, description="full, lora, prompt or prefix (default: full; lora for sft)")
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    name: str | None = Field(None, description="result name[:tag] (default: <model>-<dataset>, versioned v1, v2...)")
    suffix: str | None = Field(None, description="OpenAI style: the result is named <model>-<suffix>")


def spec_of(body: FineTuneIn, caller: Caller) -> TrainSpec:
    name = body.name or (f"{body.model.split(':')[0]}-{body.suffix}" if body.suffix else None)
    return TrainSpec.parse({"base": body.model, "dataset": body.dataset, "task": body.task, "method": body.method,
                            "hyperparameters": body.hyperparameters, "name": name, "tenant": caller.tenant,
                            "publish": caller.admin})


# Plain ``def`` handlers: FastAPI runs them in its thread pool (they read the database and datasets).
@router.post("/jobs")
def create_job(body: FineTuneIn, jobs: JobsDep, runtime: RuntimeDep, caller: CallerDep) -> dict[str, Any]:
    plan = plan_training(TrainEnv.of(runtime, caller.tenant), spec_of(body, caller))
    job_id = jobs.submit(JOB_KIND, plan.job_spec(), tenant=caller.tenant)  # the runner reads the plan back
    return {**job_record(jobs.get(job_id, caller.tenant)), "plan": plan.summary()}


@router.get("/jobs")
def list_jobs(jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    found = [job_record(j) for j in jobs.list(caller.tenant) if j.kind == JOB_KIND]
    return {"object": "list", "data": found}


@router.get("/jobs/{job_id}")
def get_job(job_id: str, jobs: JobsDep, caller: CallerDep) -> dict[str, Any]:
    return job_record(jobs.get(job_id, caller.tenant))
