"""Running the daemon's own HTTP routes in-process for the console, as the signed-in key.

The console's actions (chat, classify, tag, feedback, alerts) go through the public routes rather than
their modules: the API key middleware checks the key's scopes, rate limit and token quota exactly as for
any client, the metrics and request log see ordinary traffic, and a subsystem this daemon lacks shows up
as a plain 404 the page can explain. Responses stream through (chat's Server-Sent Events arrive token by
token); when the browser goes away, the inner request sees a disconnect and the kernel cancels it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Message

from llmos.web.session import ConsoleUser

_HOP_HEADERS = {b"content-length", b"transfer-encoding", b"connection", b"set-cookie"}


class _Call:
    """One inner request: the app runs in its own task and hands its ASGI messages over a channel."""

    def __init__(self, request: Request, user: ConsoleUser, method: str, path: str, body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"accept", b"application/json, text/event-stream")]
        if user.raw_key:
            headers.append((b"authorization", f"Bearer {user.raw_key}".encode()))
        path, _, query = path.partition("?")
        self.scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                      "scheme": request.url.scheme, "path": path, "raw_path": path.encode(),
                      "query_string": query.encode(),
                      "root_path": "", "headers": headers, "client": request.scope.get("client"),
                      "server": request.scope.get("server")}
        self.app, self.body = request.app, body
        self.sender, self.messages = anyio.create_memory_object_stream[Message](max_buffer_size=256)
        self.gone = anyio.Event()
        self._body_sent = False
        self.task = asyncio.ensure_future(self._run())

    async def _receive(self) -> Message:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def _run(self) -> None:
        async with self.sender:
            try:
                await self.app(self.scope, self._receive, self.sender.send)
            except Exception:  # noqa: BLE001 - the app's own handlers normally answer; this is a last resort
                err = json.dumps({"error": {"message": "internal error", "type": "internal_error"}}).encode()
                await self.sender.send({"type": "http.response.start", "status": 500, "headers": []})
                await self.sender.send({"type": "http.response.body", "body": err})
            except anyio.BrokenResourceError:
                pass  # the reader left

    async def start(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        first = await self.messages.receive()
        return int(first["status"]), [(k, v) for k, v in first.get("headers", []) if k.lower() not in _HOP_HEADERS]

    async def body_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for message in self.messages:
                if message["type"] != "http.response.body":
                    continue
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body", False):
                    break
        finally:
            self.gone.set()  # the browser left, or the body ended: either way the inner request is over
            self.messages.close()


def _encode(payload: Any) -> bytes:
    return b"" if payload is None else json.dumps(payload).encode()


async def stream(request: Request, user: ConsoleUser, method: str, path: str, payload: Any = None) -> StreamingResponse:
    """``method path`` on this app, its response streamed back as it is produced."""
    call = _Call(request, user, method, path, _encode(payload))
    status, headers = await call.start()
    out = StreamingResponse(call.body_chunks(), status_code=status)
    out.raw_headers = [h for h in out.raw_headers if h[0] not in (b"content-type",)] + headers
    return out


async def forward(request: Request, user: ConsoleUser, method: str, path: str,
                  payload: Any = None) -> tuple[int, Any]:
    """(status, decoded JSON body or text) of ``method path`` on this app."""
    call = _Call(request, user, method, path, _encode(payload))
    status, _ = await call.start()
    data = b"".join([chunk async for chunk in call.body_chunks()])
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode("utf-8", "replace")
