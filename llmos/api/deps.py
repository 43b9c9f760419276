"""Request-scoped dependencies: the kernel, the runtime, and who is calling.

They are ``async def`` because they only read what the app and the access middleware already hold:
FastAPI runs a plain ``def`` dependency in its thread pool, a hand-off to a thread and back for each
one of every request, which under a burst queued up in front of the handlers."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from llmos.auth.limits import Quota
from llmos.auth.scopes import ADMIN, ALL_SCOPES
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime


BACKGROUND_PRIORITY = -1000  # below anything a request may ask for (-100): batch work goes last


@dataclass
class Caller:
    """Who sent a request: the tenant it acts for, the API key used and its scopes.

    ``background`` marks a batch job's runner acting for the key (or, with auth off, the local user).
    With auth off there is no key: ``key_id`` is None and the caller holds every scope. ``quota`` is the
    key's daily token quota (None: unlimited); generation charges it as tokens are produced.
    """

    tenant: str = "default"
    key_id: str | None = None
    scopes: frozenset[str] = field(default_factory=lambda: ALL_SCOPES)
    quota: Quota | None = None
    background: bool = False  # sent by a batch job's runner: low priority, not interactive load

    @property
    def priority(self) -> int | None:
        """The queue priority every request of this caller gets (None: the request's own)."""
        return BACKGROUND_PRIORITY if self.background else None

    @property
    def admin(self) -> bool:
        """Admins may write public model names (publish); everyone else writes their own tenant's."""
        return ADMIN in self.scopes


async def get_kernel(request: Request) -> Kernel:
    return request.app.state.kernel


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_caller(request: Request) -> Caller:
    caller = getattr(request.state, "caller", None)
    return caller if isinstance(caller, Caller) else Caller()
