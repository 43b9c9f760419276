"""One error shape for every 4xx and 5xx, OpenAI's: ``{"error": {"message", "type", "code", "param"}}``.

llmos errors, validation failures, Starlette's own 404 / 405 / body-parse errors and unexpected
exceptions all leave through here; the middlewares that answer before any route (auth, the JSON
guard) use ``send_error``.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from llmos.errors import LlmosError, Unavailable

log = logging.getLogger("llmos.api")
_STATUS_TYPES = {400: "invalid_request_error", 401: "invalid_api_key", 403: "insufficient_scope",
                 404: "not_found", 405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
                 415: "unsupported_media_type", 422: "invalid_request_error", 429: "rate_limit_exceeded"}


def error_body(message: str, type_: str, *, code: str | None = None, param: str | None = None,
               **extra: object) -> dict[str, object]:
    """``code`` defaults to ``type_``: llmos's types are already specific (``model_not_found``)."""
    return {"error": {"message": message, "type": type_, "code": code or type_, "param": param, **extra}}


async def send_error(send: Send, status: int, message: str, type_: str, headers: dict[str, str] | None = None,
                     *, param: str | None = None) -> None:
    """Answer an ASGI request with an error body, before (or instead of) any route."""
    body = json.dumps(error_body(message, type_, param=param)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _llmos_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LlmosError)
    headers = {}
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    details = dict(exc.details)
    param = details.pop("param", None)
    body = error_body(exc.message, exc.code, param=str(param) if param is not None else None, **details)
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


# Validation failures that mean "llmos does not do this" rather than "this value is malformed": 400.
_UNSUPPORTED = {"extra_forbidden": "unsupported_parameter", "unsupported_parameter": "unsupported_parameter",
                "unsupported_content": "unsupported_content"}


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    refused = next((e for e in errors if e.get("type") in _UNSUPPORTED), None)
    first = refused or (errors[0] if errors else {})
    field = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    if refused is not None:
        code = _UNSUPPORTED[refused["type"]]
        msg = f"{field}: unknown parameter; llmos does not support it" if refused["type"] == "extra_forbidden" \
            else f"{field}: {refused.get('msg')}"
        return JSONResponse(error_body(msg, "invalid_request_error", code=code, param=field), status_code=400)
    msg = f"{field}: {first.get('msg', 'invalid')}"
    return JSONResponse(error_body(msg, "invalid_request_error", code="invalid_value", param=field),
                        status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own answers (no such route, wrong method, a body it could not parse) in our shape."""
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404 and exc.detail == "Not Found":
        message = f"no route {request.method} {request.url.path}; see /docs for the API"
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail) if exc.detail else HTTPStatus(status).phrase
    type_ = _STATUS_TYPES.get(status, "internal_error" if status >= 500 else "invalid_request_error")
    return JSONResponse(error_body(message, type_), status_code=status, headers=exc.headers)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_body("internal error; see the daemon log", "internal_error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(LlmosError, _llmos_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
