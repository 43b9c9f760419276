"""Request-scoped dependencies: the kernel, the runtime, and who is calling."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from llmos.kernel.core import Kernel
from llmos.runtime import Runtime


@dataclass
class Caller:
    """Who sent a request: the tenant it acts for and the API key used (None when auth is off)."""

    tenant: str = "default"
    key_id: str | None = None


def get_kernel(request: Request) -> Kernel:
    return request.app.state.kernel


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_caller(request: Request) -> Caller:
    caller = getattr(request.state, "caller", None)
    return caller if isinstance(caller, Caller) else Caller()
