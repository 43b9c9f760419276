"""Shared by /v1/chat/completions and /v1/completions: admission checks, the kernel request,
and the two ways to answer (one JSON body, or a Server-Sent Events stream)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio
from starlette.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from llmos.api.deps import Caller
from llmos.api.errors import error_body
from llmos.api.reqlog import LogEntry, record
from llmos.api.schemas import SamplingIn, Usage
from llmos.errors import InvalidInput, PayloadTooLarge, QuotaExceeded
from llmos.kernel.core import Kernel, Resolved
from llmos.kernel.request import Request
from llmos.engines.types import RequestStatus, SamplingParams
from llmos.runtime import Runtime

DEFAULT_MAX_TOKENS = 512

# Builds one chunk (streaming) or the final body: (request, text, finish_reason) -> dict
ChunkFn = Callable[[Request, str, str | None], dict[str, object]]


@dataclass
class Job:
    """One admitted generation: the kernel request and its log entry."""

    req: Request
    resolved: Resolved
    log: LogEntry


def check_prompt_size(kernel: Kernel, text: str) -> None:
    limit = kernel.settings.max_prompt_chars
    if len(text) > limit:
        raise PayloadTooLarge(f"the prompt has {len(text)} characters; the limit is {limit} (LLMOS_MAX_PROMPT_CHARS)")


def sampling(body: SamplingIn, prompt_len: int, context: int | None, cap: int | None = None) -> SamplingParams:
    """Sampling parameters; ``cap`` is the daemon's limit on max_tokens (LLMOS_MAX_TOKENS)."""
    room = (context or 2048) - prompt_len
    if room <= 0:
        raise InvalidInput(f"the prompt has {prompt_len} tokens, which fills the model's context of {context}")
    wanted = body.token_limit()
    if wanted is not None and wanted > room:
        raise InvalidInput(f"max_tokens {wanted} plus the prompt's {prompt_len} tokens exceeds the model's "
                           f"context of {context} tokens; ask for at most {room}", param="max_tokens")
    if cap is not None and wanted is not None and wanted > cap:
        raise InvalidInput(f"max_tokens {wanted} is over this daemon's limit of {cap} (LLMOS_MAX_TOKENS)",
                           param="max_tokens")
    room = min(room, cap) if cap is not None else room
    return SamplingParams(max_tokens=wanted or min(DEFAULT_MAX_TOKENS, room), temperature=body.temperature,
                          top_p=body.top_p, top_k=body.top_k, stop=body.stop_list(), seed=body.seed)


def make_job(kernel: Kernel, body: SamplingIn, resolved: Resolved, ids: list[int], caller: Caller,
             route: str, prompt_text: str) -> Job:
    params = sampling(body, len(ids), resolved.base.manifest.context_length, kernel.settings.max_tokens)
    quota = caller.quota
    if quota is not None:
        left = quota.remaining()
        if left <= len(ids):
            raise QuotaExceeded(f"the prompt's {len(ids)} tokens leave no room in the {max(left, 0)} tokens left of this "
                                f"key's daily quota of {quota.limit}; it renews at 00:00 UTC",
                                retry_after=quota.retry_after())
        if not body.stream:  # one answer: stop where the quota ends (finish_reason "length")
            params.max_tokens = max(1, min(params.max_tokens, left - len(ids)))
    req = Request(model=resolved.key, prompt_ids=ids, params=params, adapter=resolved.adapter,
                  tenant=_queue_tenant(body, caller), priority=body.priority)
    log = LogEntry(req.id, route, resolved.info.ref, caller, adapter=resolved.adapter,
                   prompt_tokens=len(ids), prompt=prompt_text)
    return Job(req, resolved, log)


def _queue_tenant(body: SamplingIn, caller: Caller) -> str:
    """Whose fair share a request draws on: a key's tenant; without auth, ``user`` may name one."""
    return caller.tenant if caller.key_id else (body.user or caller.tenant)


def usage(req: Request) -> dict[str, int]:
    n_out = len(req.output_ids)
    return Usage(prompt_tokens=len(req.prompt_ids), completion_tokens=n_out,
                 total_tokens=len(req.prompt_ids) + n_out).model_dump()


def finish_reason(req: Request) -> str:
    return "length" if req.status == RequestStatus.FINISHED_LENGTH else "stop"


def _finish_log(job: Job, text: str) -> None:
    job.log.completion_tokens = len(job.req.output_ids)
    job.log.output = text
    if job.req.first_token_at is not None:
        job.log.ttft_ms = (job.req.first_token_at - job.req.arrived) * 1000
    if job.req.status == RequestStatus.FINISHED_ERROR:
        job.log.status = 500
    elif job.req.status == RequestStatus.FINISHED_ABORTED and job.log.status == 200:
        job.log.status = 499  # the client went away


async def respond_once(kernel: Kernel, runtime: Runtime, job: Job, body_fn: ChunkFn) -> JSONResponse:
    stream = await kernel.generate(job.req)
    parts = [out.text async for out in stream]
    text = "".join(parts)
    _finish_log(job, text)
    await record(runtime, job.log)
    if job.req.status == RequestStatus.FINISHED_ERROR:
        return JSONResponse({**error_body(job.req.error or "engine error", "engine_error"), "id": job.req.id},
                            status_code=500, headers={"X-Request-Id": job.req.id})
    return JSONResponse(body_fn(job.req, text, finish_reason(job.req)), headers={"X-Request-Id": job.req.id})


async def respond_stream(kernel: Kernel, runtime: Runtime, job: Job, chunk_fn: ChunkFn,
                         first: dict[str, object] | None, include_usage: bool) -> StreamingResponse:
    stream = await kernel.generate(job.req)  # QueueFull raises here, before any byte is sent
    return StreamingResponse(_sse(kernel, runtime, job, stream, chunk_fn, first, include_usage),
                             media_type="text/event-stream",
                             headers={"X-Request-Id": job.req.id, "Cache-Control": "no-cache"})


async def _sse(kernel: Kernel, runtime: Runtime, job: Job, stream: AsyncIterator, chunk_fn: ChunkFn,  # type: ignore[type-arg]
               first: dict[str, object] | None, include_usage: bool) -> AsyncIterator[str]:
    parts: list[str] = []
    quota = job.log.caller.quota
    try:
        if first is not None:
            yield _event(first)
        within = quota is None or await run_in_threadpool(quota.charge, len(job.req.prompt_ids))
        while within:
            out = await anext(stream, None)
            if out is None:
                break
            if out.text:
                parts.append(out.text)
                yield _event(chunk_fn(job.req, out.text, None))
            if quota is not None:
                within = quota.charge(1)  # in memory after the first charge of the day
        # leaving early (quota used up): the finally below cancels the request and frees its slot
        if not within:
            assert quota is not None
            job.log.status = 429
            yield _event({"id": job.req.id, **error_body(
                f"this key's daily quota of {quota.limit} tokens ran out during the answer; "
                "it renews at 00:00 UTC", "quota_exceeded")})
        elif job.req.status == RequestStatus.FINISHED_ERROR:
            yield _event({"id": job.req.id, **error_body(job.req.error or "engine error", "engine_error")})
        else:
            yield _event(chunk_fn(job.req, "", finish_reason(job.req)))
        if include_usage:
            yield _event({**chunk_fn(job.req, "", None), "choices": [], "usage": usage(job.req)})
        yield "data: [DONE]\n\n"
    finally:
        # A client that went away cancels this scope; the cleanup and the log row must still happen.
        with anyio.CancelScope(shield=True):
            await stream.aclose()
            _finish_log(job, "".join(parts))
            await record(runtime, job.log)


def _event(data: dict[str, object]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def created() -> int:
    return int(time.time())
