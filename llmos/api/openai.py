"""OpenAI-compatible routes: models, chat completions, completions, embeddings."""

from __future__ import annotations

import base64
import json
from typing import Annotated

import numpy as np

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from llmos.api import tools
from llmos.api.bounds import NAME_MAX
from llmos.api.choices import Choice, Delta, chat_logprobs, completion_logprobs, tool_calls_json
from llmos.api.deps import Caller, get_caller, get_kernel, get_runtime
from llmos.api.grounded import ground_chat
from llmos.api.generation import Job, check_prompt_size, created, make_job, respond_once, respond_stream, usage
from llmos.api.openai_schemas import ChatCompletionIn, CompletionIn, EmbeddingsIn
from llmos.api.reqlog import LogEntry, learns, record
from llmos.engines.base import ChatMessage
from llmos.engines.types import TokenLogprobs
from llmos.kernel.core import Kernel
from llmos.kernel.request import new_request_id
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
                           caller: CallerDep, request: Request) -> Response:
    plan = tools.plan(body)
    needs = "a tool call inside a free reply" if plan.constraint is not None and plan.constraint.trigger else None
    rid = new_request_id()  # before resolving: a canary splits traffic by request id
    resolved = await run_in_threadpool(lambda: kernel.resolve(body.model, "generate", key=rid, tenant=caller.tenant,
                                                              needs=needs))
    messages = tools.chat_messages(body.messages)
    citations = None
    if body.knowledge is not None:
        messages, citations = await ground_chat(kernel, runtime, caller, body.knowledge, messages)
    prompt_text = "\n".join(m.content for m in messages)
    check_prompt_size(kernel, prompt_text)
    if plan.constraint is not None:  # a schema the engine cannot enforce is a 400 now, not a failed stream later
        await kernel.check_constraint(resolved, plan.constraint)
    codec = await kernel.codec_async(resolved)
    ids = codec.encode_chat(messages, plan.offered or None)
    job = make_job(kernel, body, resolved, ids, caller, "chat", conversation_json(messages), plan.constraint, plan,
                   request_id=rid, keep=learns(request, resolved.info.name, caller.tenant))
    if citations is not None:
        job.citations = job.log.citations = [c.to_json() for c in citations]
    if body.stream:
        first = [_chat_chunk(job, c, Delta(), None, role=True) for c in job.choices]
        include = bool(body.stream_options and body.stream_options.include_usage)
        return await respond_stream(kernel, runtime, job, _chat_chunk, first, include)
    return await respond_once(kernel, runtime, job, _chat_body)


def conversation_json(messages: list[ChatMessage]) -> str:
    """The logged form of a chat's prompt: its text turns as a JSON list of ``{"role", "content"}``
    (what a correction of the answer is learned with; ``llmos.feedback.shapes.conversation``)."""
    return json.dumps([{"role": m.role, "content": m.content} for m in messages], ensure_ascii=False)


def _chat_chunk(job: Job, choice: Choice, delta: Delta, finish: str | None, *, role: bool = False) -> dict[str, object]:
    out: dict[str, object] = {"role": "assistant", "content": ""} if role else {}
    if delta.text:
        out["content"] = delta.text
    if delta.calls:
        out["tool_calls"] = tool_calls_json(delta.calls, len(choice.calls) - len(delta.calls), stream=True)
    lp = chat_logprobs(delta.logprobs) if delta.logprobs else None
    chunk: dict[str, object] = {"id": job.id, "object": "chat.completion.chunk", "created": created(),
                                "model": job.resolved.name,
                                "choices": [{"index": choice.index, "delta": out, "logprobs": lp, "finish_reason": finish}]}
    if finish is not None and job.citations is not None:  # the passages ride on each choice's last chunk
        chunk["citations"] = job.citations
    return chunk


def _chat_body(job: Job) -> dict[str, object]:
    choices = []
    for c in job.choices:
        message: dict[str, object] = {"role": "assistant", "content": c.message_content()}
        if c.calls:
            message["tool_calls"] = tool_calls_json(c.calls)
        lp = chat_logprobs(c.logprobs) if c.req.params.logprobs is not None else None
        choices.append({"index": c.index, "message": message, "logprobs": lp, "finish_reason": c.finish_reason})
    out: dict[str, object] = {"id": job.id, "object": "chat.completion", "created": created(),
                              "model": job.resolved.name, "choices": choices, "usage": usage(job)}
    if job.citations is not None:
        out["citations"] = job.citations
    return out


@router.post("/completions", response_model=None)
async def completions(body: CompletionIn, kernel: KernelDep, runtime: RuntimeDep, caller: CallerDep,
                      request: Request) -> Response:
    rid = new_request_id()  # before resolving: a canary splits traffic by request id
    resolved = await run_in_threadpool(lambda: kernel.resolve(body.model, "generate", key=rid, tenant=caller.tenant))
    check_prompt_size(kernel, body.text())
    codec = await kernel.codec_async(resolved)
    job = make_job(kernel, body, resolved, codec.encode(body.text()), caller, "completion", body.text(),
                   request_id=rid, keep=learns(request, resolved.info.name, caller.tenant))
    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        return await respond_stream(kernel, runtime, job, _completion_chunk, [], include)
    return await respond_once(kernel, runtime, job, _completion_body)


def _completion_choice(job: Job, c: Choice, text: str, entries: list[TokenLogprobs], offset: int,
                       finish: str | None) -> dict[str, object]:
    lp = completion_logprobs(entries, offset) if c.req.params.logprobs is not None and (entries or finish) else None
    return {"index": c.index, "text": text, "logprobs": lp, "finish_reason": finish}


def _completion_chunk(job: Job, choice: Choice, delta: Delta, finish: str | None) -> dict[str, object]:
    before = choice.logprobs[:len(choice.logprobs) - len(delta.logprobs)]
    offset = sum(len(e.chosen.token) for e in before)
    return {"id": job.id, "object": "text_completion", "created": created(), "model": job.resolved.name,
            "choices": [_completion_choice(job, choice, delta.text, delta.logprobs, offset, finish)]}


def _completion_body(job: Job) -> dict[str, object]:
    choices = [_completion_choice(job, c, c.text, c.logprobs, 0, c.finish_reason) for c in job.choices]
    return {"id": job.id, "object": "text_completion", "created": created(), "model": job.resolved.name,
            "choices": choices, "usage": usage(job)}


@router.post("/embeddings")
async def embeddings(body: EmbeddingsIn, kernel: KernelDep, runtime: RuntimeDep, caller: CallerDep) -> JSONResponse:
    resolved = await run_in_threadpool(lambda: kernel.resolve(body.model, "embed", tenant=caller.tenant))
    texts = body.texts()
    check_prompt_size(kernel, "".join(texts))
    codec = await kernel.codec_async(resolved)
    n_tokens = sum(codec.count(t) for t in texts)
    vectors = await kernel.call(resolved, lambda e: e.embed(texts, adapter=resolved.adapter),
                                background=caller.background)
    rid = new_request_id()
    await record(runtime, LogEntry(rid, "embeddings", resolved.exact, caller, adapter=resolved.adapter,
                                   owner=resolved.info.tenant, prompt_tokens=n_tokens, prompt="\n".join(texts)))
    encode = _base64 if body.encoding_format == "base64" else list
    data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)]
    return JSONResponse({"object": "list", "id": rid, "model": resolved.name, "data": data,
                         "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}},
                        headers={"X-Request-Id": rid})


def _base64(vector: list[float]) -> str:
    """OpenAI's compact form: little-endian float32 bytes, base64-encoded."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
