"""Console sign-in: an API key kept server-side behind an HttpOnly, SameSite=Strict session cookie,
and CSRF tokens (double-submit: a random cookie echoed by every form field or ``X-CSRF-Token`` header).

The raw key never reaches the browser's scripts: the cookie holds a random session id, the key stays in
this process's memory and is re-checked with ``authenticate`` on every request, so a revoked key ends
its sessions at once. A daemon restart forgets sessions (people sign in again), which is the safe side.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from fastapi import Request, Response

from llmos.config import Settings
from llmos.errors import LlmosError

SESSION_COOKIE = "llmos_session"
CSRF_COOKIE = "llmos_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 1000
ALL_SCOPES = frozenset({"admin", "train", "infer", "read"})


class SignInRequired(LlmosError):
    http_status = 401
    code = "sign_in_required"


class CsrfRefused(LlmosError):
    http_status = 403
    code = "csrf_refused"


class ScopeRefused(LlmosError):
    http_status = 403
    code = "insufficient_scope"


@dataclass
class ConsoleUser:
    """Who is using the console: a signed-in key, or anonymous when the daemon runs without auth."""

    tenant: str = "default"
    key_id: str | None = None
    name: str | None = None
    scopes: frozenset[str] = field(default_factory=lambda: ALL_SCOPES)
    raw_key: str | None = None  # for calls forwarded to the daemon's own routes; never rendered

    @property
    def signed_in(self) -> bool:
        return self.key_id is not None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


class Sessions:
    """In-memory session id -> raw key, bounded (oldest dropped first) and expiring."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, max_sessions: int = MAX_SESSIONS) -> None:
        self._ttl, self._max = ttl_s, max_sessions
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, raw_key: str) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._items[sid] = (raw_key, time.monotonic() + self._ttl)
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return sid

    def key(self, sid: str | None) -> str | None:
        if not sid:
            return None
        with self._lock:
            item = self._items.get(sid)
            if item is None or item[1] < time.monotonic():
                self._items.pop(sid, None)
                return None
            return item[0]

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._items.pop(sid or "", None)


def auth_required(settings: Settings) -> bool:
    """Whether the daemon demands keys (LLMOS_AUTH on, or auto on a non-loopback address)."""
    return bool(settings.auth_enabled)


def sessions_of(request: Request) -> Sessions:
    state = request.app.state
    if not hasattr(state, "console_sessions"):
        state.console_sessions = Sessions()
    return state.console_sessions


def check_key(request: Request, raw_key: str) -> ConsoleUser | None:
    """The user a raw key signs in as, or None (unknown, malformed, revoked, or no auth subsystem)."""
    try:
        from llmos.auth import authenticate
    except ImportError:
        return None
    principal = authenticate(request.app.state.runtime.db, raw_key)
    if principal is None:
        return None
    return ConsoleUser(tenant=principal.tenant, key_id=principal.key_id, name=principal.name,
                       scopes=frozenset(principal.scopes), raw_key=raw_key)


def current_user(request: Request) -> ConsoleUser | None:
    """The signed-in user; anonymous when auth is off; None when auth is on and nobody signed in."""
    sid = request.cookies.get(SESSION_COOKIE)
    raw = sessions_of(request).key(sid)
    if raw is not None:
        user = check_key(request, raw)
        if user is not None:
            return user
        sessions_of(request).drop(sid)  # revoked since sign-in
    if auth_required(request.app.state.runtime.settings):
        return None
    return ConsoleUser()


def require_user(request: Request, scope: str | None = None) -> ConsoleUser:
    user = current_user(request)
    if user is None:
        raise SignInRequired("sign in with an API key first")
    if scope is not None and not user.allows(scope):
        raise ScopeRefused(f"this key lacks the {scope!r} scope")
    return user


# -- CSRF ----------------------------------------------------------------------------------------------
def csrf_token(request: Request) -> str:
    """This browser's token (a new one when it has none yet; ``set_csrf_cookie`` stores it)."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if not token:
        token = request.state.new_csrf = secrets.token_urlsafe(32)
    return token


def set_csrf_cookie(request: Request, response: Response) -> None:
    new = getattr(request.state, "new_csrf", None)
    if new:
        response.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="strict", secure=_secure(request),
                            path="/console")


def check_csrf(request: Request, submitted: str | None) -> None:
    """Refuse (403) a POST whose token is missing or differs from the browser's CSRF cookie."""
    cookie = request.cookies.get(CSRF_COOKIE)
    sent = submitted or request.headers.get(CSRF_HEADER)
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise CsrfRefused("missing or wrong CSRF token; reload the page and try again")


def start_session(request: Request, response: Response, raw_key: str) -> None:
    sid = sessions_of(request).create(raw_key)
    response.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="strict", secure=_secure(request),
                        path="/", max_age=int(SESSION_TTL_S))


def end_session(request: Request, response: Response) -> None:
    sessions_of(request).drop(request.cookies.get(SESSION_COOKIE))
    response.delete_cookie(SESSION_COOKIE, path="/")


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"
