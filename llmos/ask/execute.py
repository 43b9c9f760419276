"""Running a plan: each step is a call of the daemon's own route, in-process, with the caller's own key.

The calls go through the whole application (API-key middleware, scopes, rate limits, quotas, request
validation, metrics), exactly as if the caller had sent them, so a plan can never do more than its
caller could. Each step is audited (``ask.step``); the first step that fails stops the plan, and the
answer lists what ran.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
from starlette.types import ASGIApp

from llmos.ask.types import PlanStep, StepResult
from llmos.auth import audit
from llmos.db.engine import Database


def _body(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return r.text


async def _send(client: httpx.AsyncClient, step: PlanStep) -> httpx.Response:
    """One step's call; an uploaded file is read back through its own route first, with the same key."""
    call = step.call
    if call.upload is None:
        return await client.request(call.method, call.path, json=call.body)
    if call.upload.file_id is None:
        raise ValueError("a step uploading a local path runs in the client that asked")  # _run refuses it first
    content = await client.get(f"/v1/files/{call.upload.file_id}/content")
    if content.status_code >= 400:
        return content
    name = await client.get(f"/v1/files/{call.upload.file_id}")
    filename = name.json().get("filename", call.upload.file_id) if name.status_code < 400 else call.upload.file_id
    return await client.request(call.method, call.path, data=call.form or {},
                                files=[(call.upload.field, (filename, content.content, "application/octet-stream"))])


async def run_steps(app: ASGIApp, token: str | None, steps: list[PlanStep], *, db: Database, actor: str,
                    tenant: str, plan_id: str) -> list[StepResult]:
    """The steps in order until one fails; one result for each step that was called."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    results: list[StepResult] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://llmos.ask", headers=headers,
                                 timeout=None) as client:
        for i, step in enumerate(steps):
            call = step.call
            r = await _send(client, step)
            ok = r.status_code < 400
            results.append(StepResult(step=i, operation=step.operation, status=r.status_code, ok=ok, result=_body(r)))
            await anyio.to_thread.run_sync(lambda: audit(db, actor, tenant, "ask.step", f"{call.method} {call.path}",
                                                         plan=plan_id, step=i, operation=step.operation,
                                                         status=r.status_code))
            if not ok:
                break
    return results
