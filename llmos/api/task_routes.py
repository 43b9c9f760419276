"""Task routes: /v1/classify (label probabilities) and /v1/tag (entity spans with offsets)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from llmos.api.deps import Caller, get_caller, get_kernel, get_runtime
from llmos.api.generation import check_prompt_size
from llmos.api.reqlog import LogEntry, learns, record
from llmos.api.schemas import TextsIn
from llmos.kernel.core import Kernel
from llmos.kernel.request import new_request_id
from llmos.prompt_tasks import is_prompt_task
from llmos.prompt_tasks import serve as prompt_tasks
from llmos.runtime import Runtime

router = APIRouter(prefix="/v1", tags=["tasks"])
KernelDep = Annotated[Kernel, Depends(get_kernel)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerDep = Annotated[Caller, Depends(get_caller)]


async def _run(task: str, body: TextsIn, kernel: Kernel, runtime: Runtime, caller: Caller):  # type: ignore[no-untyped-def]
    rid = new_request_id()  # before resolving: a canary splits traffic by request id
    resolved = await run_in_threadpool(lambda: kernel.resolve(body.model, task, key=rid, tenant=caller.tenant))
    texts = body.texts()
    check_prompt_size(kernel, "".join(texts))
    if is_prompt_task(resolved.info):  # a template + labels over a generator or encoder, no head
        results = await prompt_tasks.run(task, kernel, resolved, texts, tenant=caller.tenant)
        return rid, resolved, texts, results
    fn = {"classify": lambda e: e.classify(texts, adapter=resolved.adapter),
          "tag": lambda e: e.tag(texts, adapter=resolved.adapter)}[task]
    results = await kernel.call(resolved, fn, background=caller.background)
    return rid, resolved, texts, results


@router.post("/classify")
async def classify(body: TextsIn, kernel: KernelDep, runtime: RuntimeDep, caller: CallerDep,
                   request: Request) -> JSONResponse:
    rid, resolved, texts, results = await _run("classify", body, kernel, runtime, caller)
    data = []
    for i, scores in enumerate(results):
        label = max(scores, key=scores.__getitem__)
        data.append({"index": i, "label": label, "score": scores[label], "scores": scores})
    await record(runtime, LogEntry(rid, "classify", resolved.exact, caller, adapter=resolved.adapter,
                                   owner=resolved.info.tenant, prompt=json.dumps(texts, ensure_ascii=False),
                                   output=[d["label"] for d in data],
                                   keep=learns(request, resolved.info.name, caller.tenant)))
    return JSONResponse({"id": rid, "object": "classification", "model": resolved.name, "data": data},
                        headers={"X-Request-Id": rid})


@router.post("/tag")
async def tag(body: TextsIn, kernel: KernelDep, runtime: RuntimeDep, caller: CallerDep,
              request: Request) -> JSONResponse:
    rid, resolved, texts, results = await _run("tag", body, kernel, runtime, caller)
    data = [{"index": i, "entities": [asdict(s) for s in spans]} for i, spans in enumerate(results)]
    await record(runtime, LogEntry(rid, "tag", resolved.exact, caller, adapter=resolved.adapter,
                                   owner=resolved.info.tenant, prompt=json.dumps(texts, ensure_ascii=False),
                                   output=[d["entities"] for d in data],
                                   keep=learns(request, resolved.info.name, caller.tenant)))
    return JSONResponse({"id": rid, "object": "tagging", "model": resolved.name, "data": data},
                        headers={"X-Request-Id": rid})
