"""The daemon's front door: body-size limit, API-key authentication, scopes, rate limits and quotas.

A plain ASGI middleware, so it runs before FastAPI reads a body or parses JSON: a caller without a
valid key learns nothing about the route beyond 401. It decides, in order:

1. a body larger than ``max_body_bytes`` -> 413 (declared by Content-Length, or counted as it arrives);
2. a path no route serves -> 404, a method the path does not take -> 405, for everyone (before any key
   or scope check, so a scope error never hints at what exists beyond the public API description);
3. open routes (``/health``) and the console (which signs people in itself) pass;
4. auth off -> the request acts as tenant ``default`` with every scope;
5. no / malformed / unknown / revoked key -> 401; a key without a scope the route needs -> 403;
6. the key's request rate -> 429 + Retry-After; its daily token quota used up -> 429 + Retry-After.

The ``Caller`` it settles on is put in ``request.state.caller``. Denials and admin actions are audited.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmos.api.deps import Caller
from llmos.api.errors import send_error
from llmos.auth import ADMIN, Principal, allows, audit, authenticate
from llmos.auth.keys import principal_of
from llmos.auth.limits import Limiter
from llmos.auth.runner_key import ACTING_HEADER, is_runner_key, runner_key
from llmos.auth.policy import CONSOLE, OPEN, required_scopes
from llmos.config import Settings
from llmos.db.engine import Database

log = logging.getLogger("llmos.auth")


class _TooLarge(Exception):
    pass


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; "" when the header is malformed."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if kind.lower() == "bearer" and token.strip() else ""
    return None


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return value.decode("latin-1").strip()
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _routed(scope: Scope, send: Send) -> bool:
    """Whether some route of the app serves this path and method; answers 404 / 405 itself when not."""
    app = scope.get("app")
    routes = getattr(getattr(app, "router", None), "routes", None)
    if routes is None:
        return True  # not mounted in a Starlette app: nothing to check against
    partial = False
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return True
        partial = partial or match == Match.PARTIAL  # the path exists; the method does not
    method, path = scope["method"], scope["path"]
    if partial:
        await send_error(send, 405, f"{method} is not allowed on {path}; see /docs for the methods it takes",
                         "method_not_allowed")
    else:
        await send_error(send, 404, f"no route {method} {path}; see /docs for the API", "not_found")
    return False


class AuthMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings, db: Database, limiter: Limiter) -> None:
        self.app, self.settings, self.db, self.limiter = app, settings, db, limiter
        self.runner_key = runner_key(settings.home)  # a batch job's runner acting for its owner's key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await send_error(send, 413, f"the request body has {declared} bytes; the limit is {limit} "
                              "(LLMOS_MAX_BODY_BYTES)", "payload_too_large")
            return
        if not await _routed(scope, send):
            return
        needed = required_scopes(scope["method"], scope["path"])
        if needed in ((OPEN,), (CONSOLE,)):
            await self._call(scope, receive, send)
            return
        if self.settings.auth_enabled:
            caller = await self._admit(scope, send, needed)
            if caller is None:
                return  # denied; the answer is sent
            scope.setdefault("state", {})["caller"] = caller
        else:  # one local user: tenant "default", every scope (get_caller's default)
            caller = scope.get("state", {}).get("caller") or Caller()
            if is_runner_key(bearer_token(scope), self.runner_key):
                caller = Caller(background=True)
                scope.setdefault("state", {})["caller"] = caller
        admin_action = ADMIN in needed and scope["method"] not in ("GET", "HEAD")
        status = await self._call(scope, receive, send)
        if admin_action:
            await self._audit(caller.key_id or "local", caller.tenant, "admin_action", scope, status=status)

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Run the app with the body counted as it arrives; returns the response status."""
        limit, seen, over = self.settings.max_body_bytes, 0, False
        status = 500

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                over = True
                raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal status
            if over:  # the app turned the aborted read into some error; answer 413 instead, once
                if message["type"] == "http.response.start":
                    status = 413
                    await send_error(send, 413, f"the request body is over the limit of {limit} bytes "
                                      "(LLMOS_MAX_BODY_BYTES)", "payload_too_large")
                return
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            await send_error(send, 413, f"the request body is over the limit of {limit} bytes "
                              "(LLMOS_MAX_BODY_BYTES)", "payload_too_large")
            return 413
        return status

    async def _admit(self, scope: Scope, send: Send, needed: tuple[str, ...]) -> Caller | None:
        token = bearer_token(scope)
        background = is_runner_key(token, self.runner_key)
        if background:  # a job runner acting for the key that made its batch: that key's rights, no more
            acting = _header(scope, ACTING_HEADER.encode())
            principal = await anyio.to_thread.run_sync(principal_of, self.db, acting) if acting else None
        else:
            principal = await anyio.to_thread.run_sync(authenticate, self.db, token) if token else None
        if principal is None:
            reason = {None: "missing key", "": "malformed Authorization header"}.get(token, "unknown or revoked key")
            await self._audit("anonymous", "-", "denied", scope, status=401, reason=reason)
            await send_error(send, 401, f"{reason}: send 'Authorization: Bearer <API key>' with a valid key "
                              "(create one with `llmos keys create`)", "invalid_api_key",
                              {"WWW-Authenticate": "Bearer"})
            return None
        if not any(allows(principal.scopes, s) for s in needed):
            await self._deny(principal, scope, send, 403, "insufficient_scope",
                             f"this key's scopes ({', '.join(sorted(principal.scopes))}) do not allow "
                             f"{scope['method']} {scope['path']}; it needs one of: {', '.join(needed)}")
            return None
        caller = await self._limits(principal, scope, send)
        if caller is not None and background:
            caller.background = True
        return caller

    async def _limits(self, p: Principal, scope: Scope, send: Send) -> Caller | None:
        wait = self.limiter.admit(p.key_id, p.rate_limit)
        if wait > 0:
            await self._deny(p, scope, send, 429, "rate_limit_exceeded",
                             f"rate limit of {p.rate_limit:g} requests/s exceeded; retry in {wait:.2f}s",
                             retry_after=wait)
            return None
        quota = self.limiter.quota(p.key_id, p.token_quota)
        if quota is not None and await anyio.to_thread.run_sync(quota.exhausted):
            await self._deny(p, scope, send, 429, "quota_exceeded",
                             f"the daily quota of {p.token_quota} tokens is used up; it renews at 00:00 UTC",
                             retry_after=quota.retry_after())
            return None
        return Caller(tenant=p.tenant, key_id=p.key_id, scopes=p.scopes, quota=quota)

    async def _deny(self, p: Principal, scope: Scope, send: Send, status: int, type_: str, message: str,
                    retry_after: float | None = None) -> None:
        await self._audit(p.key_id, p.tenant, "denied", scope, status=status, reason=type_)
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
        await send_error(send, status, message, type_, headers)

    async def _audit(self, actor: str, tenant: str, action: str, scope: Scope, **detail: Any) -> None:
        target = f"{scope['method']} {scope['path']}"
        try:
            await anyio.to_thread.run_sync(lambda: audit(self.db, actor, tenant, action, target, **detail))
        except Exception:  # noqa: BLE001 - a failed audit write must not turn a denial into a 500
            log.exception("could not write audit event %s %s", action, target)
