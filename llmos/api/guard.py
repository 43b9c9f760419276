"""The JSON guard: a request body that is JSON is parsed once here, before any route, and refused
with a clear 400 in OpenAI's error shape when it is not something llmos can safely pass on:

- not UTF-8, or not JSON;
- nested deeper than ``MAX_DEPTH`` (a 100,000-deep array would exhaust the parser's stack);
- an integer outside 64 bits (SQLite and torch cannot hold it);
- a string (or object key) with a lone UTF-16 surrogate such as ``"\\ud800"``, which no tokenizer,
  database driver or JSON encoder downstream accepts.

It runs inside the auth middleware (a caller without a key learns nothing), and the body it read is
replayed to the app unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmos.api.bounds import INT64_MAX
from llmos.api.errors import send_error

MAX_DEPTH = 64
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyRefused(ValueError):
    pass


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            kind = value.decode("latin-1").split(";", 1)[0].strip().lower()
            return kind == "application/json" or kind.endswith("+json")
    return False


def check_json(body: bytes) -> None:
    """Raise BodyRefused saying what is wrong with ``body``; return when it is acceptable JSON."""
    if not body.strip():
        return  # an empty body: the route says whether it needs one
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyRefused(f"the request body is not valid UTF-8 (byte {exc.start})") from None
    _check_depth(text)
    try:
        value = json.loads(text)
    except RecursionError:
        raise BodyRefused(f"the request body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise BodyRefused(f"the request body is not valid JSON: {exc}") from None
    _check_values(value)


def _check_depth(text: str) -> None:
    """Bracket depth outside strings, counted before parsing so a deep body never reaches the parser."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise BodyRefused(f"the request body nests deeper than {MAX_DEPTH} levels")
        elif ch in "]}":
            depth -= 1


def _check_values(value: Any) -> None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, bool) or v is None or isinstance(v, float):
            continue
        if isinstance(v, int):
            if not -INT64_MAX - 1 <= v <= INT64_MAX:
                raise BodyRefused("an integer in the request body does not fit in 64 bits")
        elif isinstance(v, str):
            _check_text(v)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            for k, item in v.items():
                _check_text(k)
                stack.append(item)


def _check_text(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise BodyRefused("a string in the request body holds a lone UTF-16 surrogate (such as \\ud800); "
                          "send valid Unicode text") from None


class JsonGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            check_json(body)
        except BodyRefused as exc:
            await send_error(send, 400, str(exc), "invalid_request_error", param="body")
            return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as Starlette expects

    return again
