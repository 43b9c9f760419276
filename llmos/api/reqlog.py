"""The request log: one row per inference call, written before the response completes, so a
client that holds a response id can always name it later (feedback, audits)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from llmos.api.deps import Caller
from llmos.db.tables import RequestLog
from llmos.obs import metrics as obs_metrics
from llmos.runtime import Runtime


@dataclass
class LogEntry:
    id: str
    route: str
    model: str
    caller: Caller
    adapter: str | None = None
    started: float = field(default_factory=time.monotonic)
    status: int = 200
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    prompt: str | None = None
    output: Any = None
    citations: list[dict[str, object]] | None = None  # a grounded answer's passages (kept for feedback)
    keep: bool = False  # keep prompt and output even when log_prompts is off (the feedback loop learns from them)
    owner: str | None = None  # the tenant whose private model served it (None: a public model)

    @property
    def metric_model(self) -> str:
        """The model as metrics label it: a private model with its tenant, so two tenants' models of
        one name never share a series."""
        return f"{self.owner}/{self.model}" if self.owner else self.model


def learns(app_state: Any, name: str, tenant: str) -> bool:
    """Whether ``tenant``'s ``name`` has a feedback-loop policy: then its inputs and outputs are kept to
    learn from corrections."""
    loop = getattr(app_state, "loop", None)
    return loop is not None and loop.learns(name, tenant)


def _write(runtime: Runtime, e: LogEntry) -> None:
    keep = runtime.settings.log_prompts or e.keep
    with runtime.db.session() as s:
        s.add(RequestLog(id=e.id, tenant=e.caller.tenant, key_id=e.caller.key_id, route=e.route, model=e.model,
                         adapter=e.adapter, status=e.status, prompt_tokens=e.prompt_tokens,
                         completion_tokens=e.completion_tokens,
                         latency_ms=(time.monotonic() - e.started) * 1000, ttft_ms=e.ttft_ms,
                         prompt=e.prompt if keep else None, output=e.output if keep else None,
                         citations=e.citations))


def _observe(e: LogEntry) -> None:
    m = obs_metrics.current()
    if m is not None and e.caller.background:  # batch work: counted, but kept out of interactive latency
        m.observe_batch_request(e.route, e.status)
    elif m is not None:
        ttft = e.ttft_ms / 1000 if e.ttft_ms is not None else None
        m.observe_request(e.route, e.metric_model, e.status, time.monotonic() - e.started, ttft,
                          e.prompt_tokens, e.completion_tokens)


async def record(runtime: Runtime, entry: LogEntry) -> None:
    _observe(entry)  # the app's metrics (latency, time to first token, tokens), then the log row
    await run_in_threadpool(_write, runtime, entry)
    if entry.caller.quota is not None:  # the key's daily token quota counts what this call used
        await run_in_threadpool(entry.caller.quota.settle, entry.prompt_tokens + entry.completion_tokens)
