"""The console's JSON routes: live numbers for polling, and the playground's actions.

Every POST needs the CSRF token (header ``X-CSRF-Token``) besides the session cookie. The playground's
actions run the public routes (``/v1/chat/completions`` streaming, ``/v1/classify``, ``/v1/tag``,
``/v1/feedback``) in-process as the signed-in key (``llmos.web.forward``), so scopes, rate limits,
quotas, the request log and metrics apply to them as to any client.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from llmos.api.records import job_record
from llmos.errors import NotFound
from llmos.web import views
from llmos.web.forward import forward, stream
from llmos.web.session import ConsoleUser, check_csrf, require_user

router = APIRouter(prefix="/console/api", include_in_schema=False)
Payload = Annotated[dict[str, Any], Body()]


async def _poster(request: Request) -> ConsoleUser:
    """The signed-in user of a console POST, after its CSRF token checks out."""
    check_csrf(request, None)
    return await run_in_threadpool(require_user, request, None)


@router.get("/ps")
def ps(request: Request) -> dict[str, Any]:
    user = require_user(request, "read")
    return views.ps_payload(request.app.state.kernel, user)


@router.get("/stats")
def stats(request: Request) -> dict[str, Any]:
    user = require_user(request, "read")
    return views.stats_payload(request.app.state.runtime, request.app.state.kernel, user)


@router.get("/jobs")
def jobs(request: Request) -> dict[str, Any]:
    user = require_user(request, "read")
    return {"data": [job_record(j) for j in request.app.state.jobs.list(user.tenant)]}


@router.get("/jobs/{job_id}")
def job(request: Request, job_id: str) -> dict[str, Any]:
    user = require_user(request, "read")
    return views.job_payload(request.app.state.jobs, job_id, user.tenant)


@router.get("/models/{ref:path}/loss_curve.png")
def loss_curve(request: Request, ref: str) -> Response:
    """The training loss curve a fine-tuning job stored with the model it made."""
    user = require_user(request, "read")
    detail = views.model_detail(request.app.state.runtime, user.tenant, ref)
    data = views.model_file(request.app.state.runtime, detail.row.info, views.CURVE_FILE) if detail else None
    if data is None:
        raise NotFound(f"no loss curve stored with model {ref!r}")
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/chat")
async def chat(request: Request, payload: Payload) -> StreamingResponse:
    """Server-Sent Events exactly as ``/v1/chat/completions`` with ``stream: true`` sends them."""
    user = await _poster(request)
    return await stream(request, user, "POST", "/v1/chat/completions", {**payload, "stream": True})


@router.post("/classify")
async def classify(request: Request, payload: Payload) -> StreamingResponse:
    user = await _poster(request)
    return await stream(request, user, "POST", "/v1/classify", payload)


@router.post("/tag")
async def tag(request: Request, payload: Payload) -> StreamingResponse:
    user = await _poster(request)
    return await stream(request, user, "POST", "/v1/tag", payload)


@router.post("/feedback")
async def feedback(request: Request, payload: Payload) -> JSONResponse:
    user = await _poster(request)
    status, answer = await forward(request, user, "POST", "/v1/feedback", payload)
    if status == 404 and not (isinstance(answer, dict) and "error" in answer):
        answer = {"error": {"message": "this daemon has no feedback subsystem", "type": "not_available"}}
    return JSONResponse(answer if isinstance(answer, dict) else {"detail": answer}, status_code=status)
