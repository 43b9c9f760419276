"""Rendering console pages: one autoescaping Jinja2 environment, the CSRF cookie, security headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from llmos import __version__
from llmos.web.session import CSRF_FIELD, ConsoleUser, csrf_token, set_csrf_cookie

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
# Autoescape everything: model names, prompts, comments and dataset rows are user-supplied.
ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
# No inline script or style anywhere: the pages' own files only, so injected markup cannot run.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
PAGES = [("overview", "/console/", "Queue & models"), ("models", "/console/models", "Models"),
         ("jobs", "/console/jobs", "Jobs"), ("metrics", "/console/metrics", "Metrics"),
         ("playground", "/console/playground", "Playground"), ("datasets", "/console/datasets", "Datasets"),
         ("kb", "/console/kb", "Knowledge"), ("alerts", "/console/alerts", "Alerts")]


def _filesize(n: int | float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


ENV.filters["filesize"] = _filesize
ENV.filters["num"] = _num


def render(request: Request, template: str, user: ConsoleUser | None, *, page: str = "",
           status_code: int = 200, **context: Any) -> HTMLResponse:
    html = ENV.get_template(template).render(
        request=request, user=user, page=page, pages=PAGES, version=__version__,
        csrf=csrf_token(request), csrf_field=CSRF_FIELD, **context)
    response = HTMLResponse(html, status_code=status_code)
    secure(response)
    set_csrf_cookie(request, response)
    return response


def secure(response: Any) -> Any:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(target, safe='/')}", status_code=303)
