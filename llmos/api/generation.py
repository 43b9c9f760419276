"""Shared by /v1/chat/completions and /v1/completions: admission checks, the kernel requests (one per
choice), and the two ways to answer (one JSON body, or a Server-Sent Events stream)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

import anyio
from starlette.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from llmos.api.choices import Choice, Delta
from llmos.api.deps import Caller
from llmos.api.errors import error_body
from llmos.api.openai_schemas import SamplingIn, choice_seed
from llmos.api.reqlog import LogEntry, record
from llmos.api.schemas import Usage
from llmos.api.tools import ToolPlan
from llmos.errors import InvalidInput, PayloadTooLarge, QuotaExceeded
from llmos.kernel.core import Kernel, Resolved
from llmos.kernel.request import Request
from llmos.engines.types import OutputConstraint, RequestStatus, SamplingParams, StepOutput
from llmos.runtime import Runtime

DEFAULT_MAX_TOKENS = 512

# The route's shapes: one streamed chunk for a choice's delta (finish_reason when it ended), and the body.
ChunkFn = Callable[["Job", Choice, Delta, str | None], dict[str, object]]
BodyFn = Callable[["Job"], dict[str, object]]


@dataclass
class Job:
    """One admitted generation: a kernel request per choice, and the request's log entry."""

    choices: list[Choice]
    resolved: Resolved
    log: LogEntry
    citations: list[dict[str, object]] | None = None  # a grounded chat's passages (body and final chunks)

    @property
    def id(self) -> str:
        return self.choices[0].req.id

    @property
    def reqs(self) -> list[Request]:
        return [c.req for c in self.choices]


def check_prompt_size(kernel: Kernel, text: str) -> None:
    limit = kernel.settings.max_prompt_chars
    if len(text) > limit:
        raise PayloadTooLarge(f"the prompt has {len(text)} characters; the limit is {limit} (LLMOS_MAX_PROMPT_CHARS)")


def sampling(body: SamplingIn, prompt_len: int, context: int | None, cap: int | None = None) -> SamplingParams:
    """Sampling parameters; ``cap`` is the daemon's limit on max_tokens (LLMOS_MAX_TOKENS) for all choices."""
    room = (context or 2048) - prompt_len
    if room <= 0:
        raise InvalidInput(f"the prompt has {prompt_len} tokens, which fills the model's context of {context}")
    wanted = body.token_limit()
    if wanted is not None and wanted > room:
        raise InvalidInput(f"max_tokens {wanted} plus the prompt's {prompt_len} tokens exceeds the model's "
                           f"context of {context} tokens; ask for at most {room}", param="max_tokens")
    if cap is not None and wanted is not None and wanted * body.n > cap:
        what = f"n {body.n} x max_tokens {wanted} = {wanted * body.n}" if body.n > 1 else f"max_tokens {wanted}"
        raise InvalidInput(f"{what} is over this daemon's limit of {cap} tokens (LLMOS_MAX_TOKENS)",
                           param="max_tokens")
    room = min(room, cap // body.n) if cap is not None else room
    if room < 1:
        raise InvalidInput(f"n {body.n} is over this daemon's limit of {cap} tokens (LLMOS_MAX_TOKENS)", param="n")
    return SamplingParams(max_tokens=wanted or min(DEFAULT_MAX_TOKENS, room), temperature=body.temperature,
                          top_p=body.top_p, top_k=body.top_k, stop=body.stop_list(), seed=body.seed,
                          logprobs=body.logprobs_count())


def make_job(kernel: Kernel, body: SamplingIn, resolved: Resolved, ids: list[int], caller: Caller,
             route: str, prompt_text: str, constraint: OutputConstraint | None = None,
             tools: ToolPlan | None = None, *, request_id: str | None = None, keep: bool = False) -> Job:
    """The kernel requests of one generation; ``request_id`` (the id the canary split used) names the
    first choice and the response; ``keep`` logs prompt and output for the feedback loop."""
    if body.n > kernel.settings.max_queue:  # could never be queued at once: not a retry-later 503
        raise InvalidInput(f"n {body.n} is more than this daemon queues per model ({kernel.settings.max_queue}, "
                           "LLMOS_MAX_QUEUE)", param="n")
    params = sampling(body, len(ids), kernel.context_length(resolved), kernel.settings.max_tokens)
    params.constraint = constraint
    quota = caller.quota
    if quota is not None:
        left = quota.remaining()
        if left <= len(ids):
            raise QuotaExceeded(f"the prompt's {len(ids)} tokens leave no room in the {max(left, 0)} tokens left of this "
                                f"key's daily quota of {quota.limit}; it renews at 00:00 UTC",
                                retry_after=quota.retry_after())
        if not body.stream:  # one answer: stop where the quota ends (finish_reason "length")
            params.max_tokens = max(1, min(params.max_tokens, (left - len(ids)) // body.n))
    choices = []
    for i in range(body.n):
        named = {"id": request_id} if request_id is not None and i == 0 else {}
        req = Request(**named, model=resolved.key, prompt_ids=ids,
                      params=replace(params, seed=choice_seed(params.seed, i)),
                      adapter=resolved.adapter, tenant=_queue_tenant(body, caller),
                      priority=body.priority if caller.priority is None else caller.priority,
                      background=caller.background)
        choices.append(Choice(i, req, tools))
    log = LogEntry(choices[0].req.id, route, resolved.exact, caller, adapter=resolved.adapter,
                   owner=resolved.info.tenant,
                   prompt_tokens=len(ids), prompt=prompt_text, keep=keep)
    return Job(choices, resolved, log)


def _queue_tenant(body: SamplingIn, caller: Caller) -> str:
    """Whose fair share a request draws on: a key's tenant; without auth, ``user`` may name one."""
    return caller.tenant if caller.key_id else (body.user or caller.tenant)


def usage(job: Job) -> dict[str, int]:
    n_in = len(job.reqs[0].prompt_ids)
    n_out = sum(len(r.output_ids) for r in job.reqs)
    return Usage(prompt_tokens=n_in, completion_tokens=n_out, total_tokens=n_in + n_out).model_dump()


def _failed(job: Job) -> Request | None:
    return next((r for r in job.reqs if r.status == RequestStatus.FINISHED_ERROR), None)


def _finish_log(job: Job) -> None:
    first = job.choices[0].req
    job.log.completion_tokens = sum(len(r.output_ids) for r in job.reqs)
    job.log.output = job.choices[0].text
    if first.first_token_at is not None:
        job.log.ttft_ms = (first.first_token_at - first.arrived) * 1000
    if _failed(job) is not None:
        job.log.status = 500
    elif any(r.status == RequestStatus.FINISHED_ABORTED for r in job.reqs) and job.log.status == 200:
        job.log.status = 499  # the client went away


async def respond_once(kernel: Kernel, runtime: Runtime, job: Job, body_fn: BodyFn) -> JSONResponse:
    streams = await kernel.generate_all(job.reqs)

    async def collect(choice: Choice, stream: AsyncIterator[StepOutput]) -> None:
        async for out in stream:
            choice.push(out)
        choice.finish()

    try:
        await asyncio.gather(*(collect(c, s) for c, s in zip(job.choices, streams)))
    finally:
        kernel.forget(job.reqs)  # a client gone mid-answer: its choices stop now
    _finish_log(job)
    await record(runtime, job.log)
    failed = _failed(job)
    if failed is not None:
        return JSONResponse({**error_body(failed.error or "engine error", "engine_error"), "id": job.id},
                            status_code=500, headers={"X-Request-Id": job.id})
    return JSONResponse(body_fn(job), headers={"X-Request-Id": job.id})


async def respond_stream(kernel: Kernel, runtime: Runtime, job: Job, chunk_fn: ChunkFn,
                         first: list[dict[str, object]], include_usage: bool) -> StreamingResponse:
    streams = await kernel.generate_all(job.reqs)  # QueueFull raises here, before any byte is sent
    return StreamingResponse(_sse(kernel, runtime, job, streams, chunk_fn, first, include_usage),
                             media_type="text/event-stream",
                             headers={"X-Request-Id": job.id, "Cache-Control": "no-cache"})


async def _sse(kernel: Kernel, runtime: Runtime, job: Job, streams: list[AsyncIterator[StepOutput]], chunk_fn: ChunkFn,
               first: list[dict[str, object]], include_usage: bool) -> AsyncIterator[str]:
    quota = job.log.caller.quota
    merged = _merge(streams)
    try:
        for event in first:
            yield _event(event)
        within = quota is None or await run_in_threadpool(quota.charge, len(job.reqs[0].prompt_ids))
        while within:
            item = await anext(merged, None)
            if item is None:
                break
            choice = job.choices[item[0]]
            delta = choice.push(item[1])
            if delta.text or delta.calls:
                yield _event(chunk_fn(job, choice, delta, None))
            if quota is not None:
                within = quota.charge(1)  # in memory after the first charge of the day
        # leaving early (quota used up): the finally below cancels the requests and frees their slots
        failed = _failed(job)
        if not within:
            assert quota is not None
            job.log.status = 429
            yield _event({"id": job.id, **error_body(
                f"this key's daily quota of {quota.limit} tokens ran out during the answer; "
                "it renews at 00:00 UTC", "quota_exceeded")})
        elif failed is not None:
            yield _event({"id": job.id, **error_body(failed.error or "engine error", "engine_error")})
        else:
            for choice in job.choices:
                yield _event(chunk_fn(job, choice, choice.finish(), choice.finish_reason))
        if include_usage:
            yield _event({**chunk_fn(job, job.choices[0], Delta(), None), "choices": [], "usage": usage(job)})
        yield "data: [DONE]\n\n"
    finally:
        # A client that went away cancels this scope; the cleanup and the log row must still happen.
        with anyio.CancelScope(shield=True):
            await merged.aclose()
            kernel.forget(job.reqs)
            _finish_log(job)
            await record(runtime, job.log)


async def _merge(streams: list[AsyncIterator[StepOutput]]) -> AsyncIterator[tuple[int, StepOutput]]:
    """The choices' token streams as one, in arrival order: (choice index, token)."""
    if len(streams) == 1:  # the common case needs no tasks
        try:
            async for out in streams[0]:
                yield 0, out
        finally:
            await streams[0].aclose()  # type: ignore[attr-defined]
        return
    queue: asyncio.Queue[tuple[int, StepOutput | None]] = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[StepOutput]) -> None:
        try:
            async for out in stream:
                queue.put_nowait((i, out))
        finally:
            queue.put_nowait((i, None))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        left = len(tasks)
        while left:
            i, out = await queue.get()
            if out is None:
                left -= 1
            else:
                yield i, out
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]


def _event(data: dict[str, object]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def created() -> int:
    return int(time.time())
