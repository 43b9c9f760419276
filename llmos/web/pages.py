"""The console's pages (server-rendered HTML). Each page checks who is signed in; live parts of a page
poll the JSON routes in ``llmos.web.api`` from the console's own script."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from llmos.api.records import job_record
from llmos.auth import audit
from llmos.data.registry import Datasets
from llmos.errors import LlmosError, NotFound
from llmos.web import views
from llmos.web.forward import forward
from llmos.web.render import render, secure, to_login
from llmos.web.session import (
    ConsoleUser, auth_required, check_csrf, check_key, current_user, end_session, start_session,
)

router = APIRouter(prefix="/console", include_in_schema=False)
FEEDBACK_SHOWN = 20
root = APIRouter(include_in_schema=False)


@root.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


def _page(request: Request, scope: str) -> ConsoleUser | Response:
    """The user, or the response to send instead: the sign-in page, or 403 for a key lacking ``scope``."""
    user = current_user(request)
    if user is None:
        return to_login(request)
    if not user.allows(scope):
        return render(request, "error.html", user, status_code=403, title="Not allowed",
                      message=f"This key lacks the '{scope}' scope this page needs.")
    return user


def _missing(request: Request, user: ConsoleUser, what: str) -> Response:
    return render(request, "error.html", user, status_code=404, title="Not found", message=f"No {what} here.")


# -- sign-in ---------------------------------------------------------------------------------------
@router.get("/login")
def login_page(request: Request, target: Annotated[str, Query(alias="next")] = "/console/") -> Response:
    return render(request, "login.html", current_user(request), page="login", next=_safe_next(target),
                  auth_on=auth_required(request.app.state.runtime.settings), error=None)


@router.post("/login")
def login(request: Request, key: Annotated[str, Form(max_length=512)] = "",
          csrf_token: Annotated[str, Form(max_length=256)] = "",
          target: Annotated[str, Form(alias="next")] = "/console/") -> Response:
    check_csrf(request, csrf_token)
    user = check_key(request, key.strip()) if key.strip() else None
    _audit_sign_in(request, user)
    if user is None:
        return render(request, "login.html", current_user(request), page="login", next=_safe_next(target),
                      auth_on=auth_required(request.app.state.runtime.settings), status_code=401,
                      error="That key is not valid (unknown, malformed or revoked).")
    response = secure(RedirectResponse(_safe_next(target), status_code=303))
    start_session(request, response, key.strip())
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str, Form(max_length=256)] = "") -> Response:
    check_csrf(request, csrf_token)
    response = secure(RedirectResponse("/console/login", status_code=303))
    end_session(request, response)
    return response


def _audit_sign_in(request: Request, user: ConsoleUser | None) -> None:
    """Console sign-ins are audited like API denials: who, and whether the key was good."""
    db = request.app.state.runtime.db
    if user is None:
        audit(db, "anonymous", "-", "denied", "POST /console/login", status=401, reason="invalid key")
    else:
        audit(db, user.key_id or "anonymous", user.tenant, "console_sign_in", "POST /console/login")


def _safe_next(target: str) -> str:
    """Only a path inside the console: never an open redirect to another site."""
    return target if target.startswith("/console/") and not target.startswith("//") else "/console/"


# -- pages -----------------------------------------------------------------------------------------
@router.get("/")
def overview(request: Request) -> Response:
    user = _page(request, "read")
    if isinstance(user, Response):
        return user
    ps = views.ps_payload(request.app.state.kernel, user)
    counts = Counter(j.state.api for j in request.app.state.jobs.list(user.tenant))
    return render(request, "overview.html", user, page="overview", ps=ps, job_counts=dict(sorted(counts.items())))


@router.get("/models")
def models(request: Request) -> Response:
    user = _page(request, "read")
    if isinstance(user, Response):
        return user
    rows = [views.model_row(i) for i in views.visible_models(request.app.state.runtime, user.tenant)]
    return render(request, "models.html", user, page="models", rows=rows)


@router.get("/models/{ref:path}")
def model(request: Request, ref: str) -> Response:
    user = _page(request, "read")
    if isinstance(user, Response):
        return user
    detail = views.model_detail(request.app.state.runtime, user.tenant, ref)
    if detail is None:
        return _missing(request, user, "model by that name")
    metrics, rest = views.report_sections(detail.report) if detail.report else ({}, "")
    return render(request, "model.html", user, page="models", d=detail, metrics=metrics, report_rest=rest)


@router.get("/jobs")
def jobs(request: Request) -> Response:
    user = _page(request, "read")
    if isinstance(user, Response):
        return user
    rows = [job_record(j) for j in request.app.state.jobs.list(user.tenant)]
    return render(request, "jobs.html", user, page="jobs", rows=rows)


@router.get("/jobs/{job_id}")
def job(request: Request, job_id: str) -> Response:
    user = _page(request, "read")
    if isinstance(user, Response):
        return user
    try:
        data = views.job_payload(request.app.state.jobs, job_id, user.tenant)
    except NotFound:
        return _missing(request, user, "job with that id")
    return render(request, "job.html", user, page="jobs", j=data["job"], events=data["events"], log=data["log"])


@router.get("/metrics")
def metrics(request: Request) -> Response:
    user = _page(request, "read")
    if isinstance(user, Response):
        return user
    return render(request, "metrics.html", user, page="metrics")


@router.get("/playground")
async def playground(request: Request) -> Response:
    user = await run_in_threadpool(_page, request, "infer")
    if isinstance(user, Response):
        return user
    infos = await run_in_threadpool(views.visible_models, request.app.state.runtime, user.tenant)
    by_task = {t: [i.name if i.tag == "latest" else i.ref for i in infos if t in i.manifest.tasks]
               for t in ("generate", "classify", "tag")}
    status, body = await forward(request, user, "GET", "/v1/feedback?limit=10000")
    feedback = body.get("data", [])[-FEEDBACK_SHOWN:][::-1] if status == 200 and isinstance(body, dict) else None
    return render(request, "playground.html", user, page="playground", by_task=by_task, feedback=feedback)


@router.get("/datasets")
def datasets(request: Request) -> Response:
    user = _page(request, "read")
    if isinstance(user, Response):
        return user
    rows = Datasets.of(request.app.state.runtime, user.tenant).list()
    return render(request, "datasets.html", user, page="datasets", rows=rows)


@router.get("/datasets/{ref}")
def dataset(request: Request, ref: str) -> Response:
    user = _page(request, "read")
    if isinstance(user, Response):
        return user
    registry = Datasets.of(request.app.state.runtime, user.tenant)
    try:
        info = registry.get(ref)
        preview = registry.preview(info.ref.split("@")[0], info.version, n=20)
        versions = registry.versions(info.name)
    except LlmosError:
        return _missing(request, user, "dataset by that name")
    columns = list(dict.fromkeys(k for row in preview for k in row))
    return render(request, "dataset.html", user, page="datasets", info=info, preview=preview, columns=columns,
                  versions=versions)


@router.get("/alerts")
async def alerts(request: Request) -> Response:
    user = await run_in_threadpool(_page, request, "read")
    if isinstance(user, Response):
        return user
    status, body = await forward(request, user, "GET", "/admin/alerts")
    view = body if status == 200 and isinstance(body, dict) else {}
    return render(request, "alerts.html", user, page="alerts", available=status != 404, status=status,
                  rules=view.get("rules", []), history=view.get("history", []), source=view.get("source"),
                  error=_error_text(status, body))


def _error_text(status: int, body: object) -> str | None:
    if status < 400 or status == 404:
        return None
    err = body.get("error") if isinstance(body, dict) else None
    return str(err.get("message")) if isinstance(err, dict) else f"the daemon answered {status}"
