"""``/v1/prompt_tasks``: create a prompt-defined task (no training) and read one back.

The task is a stored model version: it appears in ``/v1/models`` and is served by ``/v1/classify``
(or ``/v1/tag`` for extraction) under its name, like any fine-tuned model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from llmos.api.deps import Caller, get_caller, get_runtime
from llmos.errors import WrongTask
from llmos.prompt_tasks import create_prompt_task, is_prompt_task, parent_ref, spec_of
from llmos.runtime import Runtime
from llmos.store.manifest import ModelInfo

router = APIRouter(prefix="/v1/prompt_tasks", tags=["prompt tasks"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerDep = Annotated[Caller, Depends(get_caller)]


class PromptTaskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="name (stored as name:v0, v1... and name:latest) or name:tag")
    base: str = Field(min_length=1, description="the generator or encoder it runs on")
    kind: Literal["classify", "extract"] = "classify"
    labels: list[str] = Field(description="class labels, or entity types for extraction")
    template: str | None = Field(None, description="prompt with a {text} placeholder (and optionally {labels})")
    descriptions: dict[str, str] = Field(default_factory=dict, description="label -> what it means")
    examples: list[dict[str, Any]] = Field(default_factory=list, description="few-shot: {text, label} or "
                                           "{text, entities: [{text, label}]}")
    temperature: float | None = Field(None, description="similarity: softmax temperature over cosines")
    max_new_tokens: int | None = Field(None, description="extraction: tokens the model may write")
    replace: bool = False


def describe(info: ModelInfo) -> dict[str, Any]:
    return {"id": info.name if info.tag == "latest" else info.ref, "object": "prompt_task", "ref": info.ref,
            "digest": info.digest, "base": parent_ref(info), "tasks": info.manifest.tasks,
            **spec_of(info).model_dump(mode="json")}


@router.post("")
async def create(body: PromptTaskIn, runtime: RuntimeDep, caller: CallerDep) -> dict[str, Any]:
    options = {k: v for k, v in (("temperature", body.temperature), ("max_new_tokens", body.max_new_tokens))
               if v is not None}
    info = await run_in_threadpool(
        create_prompt_task, runtime.store.registry, body.name, body.base, kind=body.kind, labels=body.labels,
        template=body.template, descriptions=body.descriptions, examples=body.examples, options=options,
        tenant=caller.tenant, replace=body.replace, admin=caller.admin)  # private to its tenant unless public
    return describe(info)


@router.get("/{name}")
def show(name: str, runtime: RuntimeDep, caller: CallerDep) -> dict[str, Any]:
    info = runtime.store.registry.get(name, tenant=caller.tenant)
    if not is_prompt_task(info):
        raise WrongTask(f"model {info.ref} is not a prompt task (it is a {info.manifest.kind})")
    return describe(info)
