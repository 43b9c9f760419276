"""OpenAI-compatible routes: models, chat completions, completions, embeddings."""

from __future__ import annotations

import base64
from typing import Annotated

import numpy as np

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from llmos.api.bounds import NAME_MAX
from llmos.api.deps import Caller, get_caller, get_kernel, get_runtime
from llmos.api.generation import (
    check_prompt_size, created, make_job, respond_once, respond_stream, usage,
)
from llmos.api.reqlog import LogEntry, record
from llmos.api.schemas import ChatCompletionIn, CompletionIn, EmbeddingsIn
from llmos.engines.base import ChatMessage
from llmos.kernel.core import Kernel
from llmos.kernel.request import Request, new_request_id
from llmos.runtime import Runtime
from llmos.store.manifest import ModelInfo

router = APIRouter(prefix="/v1", tags=["openai"])
KernelDep = Annotated[Kernel, Depends(get_kernel)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerDep = Annotated[Caller, Depends(get_caller)]


def model_out(info: ModelInfo) -> dict[str, object]:
    """OpenAI's model object; ``owned_by`` is ``llmos`` for a public model, the tenant for its own."""
    return {"id": info.name if info.tag == "latest" else info.ref, "object": "model",
            "owned_by": info.tenant or "llmos", "created": int(info.created_at.timestamp()),
            "tasks": info.manifest.tasks, "kind": info.manifest.kind}


@router.get("/models")
def list_models(runtime: RuntimeDep, caller: CallerDep) -> dict[str, object]:
    """The public models and the caller's own."""
    return {"object": "list", "data": [model_out(i) for i in runtime.store.registry.list(tenant=caller.tenant)]}


@router.get("/models/{model_id}")
def retrieve_model(model_id: Annotated[str, Path(max_length=NAME_MAX)], runtime: RuntimeDep,
                   caller: CallerDep) -> dict[str, object]:
    """One model as the caller names it; another tenant's private model is a 404 like an absent one."""
    return model_out(runtime.store.registry.get(model_id, tenant=caller.tenant))


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionIn, kernel: KernelDep, runtime: RuntimeDep,
                           caller: CallerDep) -> Response:
    resolved = await run_in_threadpool(lambda: kernel.resolve(body.model, "generate", tenant=caller.tenant))
    messages = [ChatMessage(m.role, m.text()) for m in body.messages]
    prompt_text = "\n".join(m.content for m in messages)
    check_prompt_size(kernel, prompt_text)
    codec = await run_in_threadpool(kernel.codec, resolved)
    ids = codec.encode_chat(messages)
    job = make_job(kernel, body, resolved, ids, caller, "chat", prompt_text)
    name = resolved.name

    def chunk(req: Request, text: str, finish: str | None) -> dict[str, object]:
        delta = {"content": text} if text else {}
        return {"id": req.id, "object": "chat.completion.chunk", "created": created(), "model": name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def whole(req: Request, text: str, finish: str | None) -> dict[str, object]:
        return {"id": req.id, "object": "chat.completion", "created": created(), "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish}], "usage": usage(req)}

    if body.stream:
        first = {**chunk(job.req, "", None), "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                         "finish_reason": None}]}
        include = bool(body.stream_options and body.stream_options.include_usage)
        return await respond_stream(kernel, runtime, job, chunk, first, include)
    return await respond_once(kernel, runtime, job, whole)


@router.post("/completions", response_model=None)
async def completions(body: CompletionIn, kernel: KernelDep, runtime: RuntimeDep, caller: CallerDep) -> Response:
    resolved = await run_in_threadpool(lambda: kernel.resolve(body.model, "generate", tenant=caller.tenant))
    check_prompt_size(kernel, body.text())
    codec = await run_in_threadpool(kernel.codec, resolved)
    job = make_job(kernel, body, resolved, codec.encode(body.text()), caller, "completion", body.text())
    name = resolved.name

    def chunk(req: Request, text: str, finish: str | None) -> dict[str, object]:
        return {"id": req.id, "object": "text_completion", "created": created(), "model": name,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

    def whole(req: Request, text: str, finish: str | None) -> dict[str, object]:
        return {**chunk(req, text, finish), "usage": usage(req)}

    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        return await respond_stream(kernel, runtime, job, chunk, None, include)
    return await respond_once(kernel, runtime, job, whole)


@router.post("/embeddings")
async def embeddings(body: EmbeddingsIn, kernel: KernelDep, runtime: RuntimeDep, caller: CallerDep) -> JSONResponse:
    resolved = await run_in_threadpool(lambda: kernel.resolve(body.model, "embed", tenant=caller.tenant))
    texts = body.texts()
    check_prompt_size(kernel, "".join(texts))
    codec = await run_in_threadpool(kernel.codec, resolved)
    n_tokens = sum(codec.count(t) for t in texts)
    vectors = await kernel.call(resolved, lambda e: e.embed(texts, adapter=resolved.adapter))
    rid = new_request_id()
    await record(runtime, LogEntry(rid, "embeddings", resolved.info.ref, caller, adapter=resolved.adapter,
                                   prompt_tokens=n_tokens, prompt="\n".join(texts)))
    encode = _base64 if body.encoding_format == "base64" else list
    data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)]
    return JSONResponse({"object": "list", "id": rid, "model": resolved.name, "data": data,
                         "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}},
                        headers={"X-Request-Id": rid})


def _base64(vector: list[float]) -> str:
    """OpenAI's compact form: little-endian float32 bytes, base64-encoded."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
