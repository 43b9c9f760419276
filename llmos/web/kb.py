"""The console's knowledge-base page: the tenant's knowledge bases with their documents, a search box,
and a grounded playground (a chat answer with ``"knowledge"``, its citations shown).

Everything goes through the public routes in-process as the signed-in key (``llmos.web.forward``):
``GET /v1/kb``, ``GET /v1/kb/{name}``, ``POST /v1/kb/{name}/search`` and ``POST /v1/chat/completions``,
so scopes, quotas, tenancy and the request log apply as for any client. Plain HTML forms: search is a
GET (a link can be shared), the grounded question a POST carrying the CSRF token.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from llmos.web import views
from llmos.web.forward import forward
from llmos.web.render import render, to_login
from llmos.web.session import ConsoleUser, check_csrf, current_user

router = APIRouter(prefix="/console", include_in_schema=False)
GROUNDED_MAX_TOKENS = 160


def _error(status: int, body: Any) -> str | None:
    if status < 400:
        return None
    err = body.get("error") if isinstance(body, dict) else None
    return str(err.get("message")) if isinstance(err, dict) else f"the daemon answered {status}"


async def _bases(request: Request, user: ConsoleUser) -> tuple[list[dict[str, Any]], str | None]:
    """Each knowledge base with its documents (``GET /v1/kb`` then ``GET /v1/kb/{name}``)."""
    status, body = await forward(request, user, "GET", "/v1/kb")
    if status != 200 or not isinstance(body, dict):
        return [], _error(status, body)
    out = []
    for kb in body.get("data", []):
        s, detail = await forward(request, user, "GET", f"/v1/kb/{quote(kb['name'], safe='')}")
        out.append(detail if s == 200 and isinstance(detail, dict) else {**kb, "document_list": []})
    return out, None


async def _page(request: Request, user: ConsoleUser, *, kb: str, q: str, mode: str,
                answer: dict[str, Any] | None = None, question: str = "", model: str = "",
                error: str | None = None) -> Response:
    bases, listing_error = await _bases(request, user)
    results, search_error = None, None
    if kb and q:
        status, body = await forward(request, user, "POST", f"/v1/kb/{quote(kb, safe='')}/search",
                                     {"query": q, "k": 5, "mode": mode})
        results, search_error = (body if status == 200 else None), _error(status, body)
    infos = await run_in_threadpool(views.visible_models, request.app.state.runtime, user.tenant)
    chat_models = [i.name if i.tag == "latest" else i.ref for i in infos if "generate" in i.manifest.tasks]
    return render(request, "kb.html", user, page="kb", bases=bases, kb=kb, q=q, mode=mode, results=results,
                  answer=answer, question=question, model=model or (chat_models[0] if chat_models else ""),
                  chat_models=chat_models, error=listing_error or search_error or error)


def _user(request: Request) -> ConsoleUser | Response:
    user = current_user(request)
    if user is None:
        return to_login(request)
    return user


@router.get("/kb")
async def kb_page(request: Request, kb: Annotated[str, Query(max_length=128)] = "",
                  q: Annotated[str, Query(max_length=2000)] = "",
                  mode: Annotated[str, Query(pattern="^(hybrid|vector|keyword)$")] = "hybrid") -> Response:
    user = await run_in_threadpool(_user, request)
    if isinstance(user, Response):
        return user
    return await _page(request, user, kb=kb, q=q.strip(), mode=mode)


@router.post("/kb/ask")
async def kb_ask(request: Request, kb: Annotated[str, Form(max_length=128)],
                 model: Annotated[str, Form(max_length=260)], question: Annotated[str, Form(max_length=4000)],
                 csrf_token: Annotated[str, Form(max_length=256)] = "") -> Response:
    """A grounded answer: ``/v1/chat/completions`` with ``knowledge``; the citations come with it."""
    check_csrf(request, csrf_token)
    user = await run_in_threadpool(_user, request)
    if isinstance(user, Response):
        return user
    payload = {"model": model, "knowledge": kb, "max_tokens": GROUNDED_MAX_TOKENS, "temperature": 0,
               "messages": [{"role": "user", "content": question}]}
    status, body = await forward(request, user, "POST", "/v1/chat/completions", payload)
    answer = body if status == 200 and isinstance(body, dict) else None
    return await _page(request, user, kb=kb, q="", mode="hybrid", answer=answer, question=question, model=model,
                       error=_error(status, body))
