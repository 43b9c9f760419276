"""Map llmos errors and validation failures to JSON error bodies (OpenAI's error shape)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from llmos.errors import LlmosError, Unavailable

log = logging.getLogger("llmos.api")


def error_body(message: str, type_: str, **extra: object) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "code": None, "param": None, **extra}}


async def _llmos_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LlmosError)
    headers = {}
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    # OpenAI's four keys are always there; the llmos code doubles as OpenAI's ``code``.
    body = {"code": exc.code, "param": None, **exc.to_dict()}
    return JSONResponse({"error": body}, status_code=exc.http_status, headers=headers)


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


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_body("internal error; see the daemon log", "internal_error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(LlmosError, _llmos_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
