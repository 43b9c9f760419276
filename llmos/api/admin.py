"""Admin routes: health, loaded models and queues, load / unload."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from llmos import __version__
from llmos.api.deps import Caller, get_caller, get_kernel, get_runtime
from llmos.api.schemas import LoadIn
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime

router = APIRouter(tags=["admin"])
KernelDep = Annotated[Kernel, Depends(get_kernel)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerDep = Annotated[Caller, Depends(get_caller)]


@router.get("/health")
def health(request: Request, runtime: RuntimeDep) -> dict[str, object]:
    return {"status": "ok", "version": __version__, "models": runtime.store.registry.count(),
            "uptime_s": round(time.time() - request.app.state.started, 1)}


@router.get("/admin/ps")
def ps(request: Request, kernel: KernelDep) -> dict[str, object]:
    res = kernel.resources
    cosched = getattr(request.app.state, "cosched", None)
    return {"budget_bytes": res.budget_bytes, "used_bytes": res.used_bytes, "reserved": res.reservations(),
            "models": [asdict(s) for s in kernel.ps()],
            "devices": [asdict(d) for d in kernel.devices()], "device_notes": kernel.device_notes(),
            "cosched": asdict(cosched.stats()) if cosched is not None else None}


@router.post("/admin/load")
async def load(body: LoadIn, kernel: KernelDep, caller: CallerDep) -> dict[str, object]:
    """Load ``model`` as the admin's own tenant names it (its private models, then public ones)."""
    state = await run_in_threadpool(lambda: kernel.load(body.model, body.keep_alive, tenant=caller.tenant))
    return asdict(state)


@router.post("/admin/unload")
async def unload(body: LoadIn, kernel: KernelDep, caller: CallerDep) -> dict[str, object]:
    unloaded = await run_in_threadpool(lambda: kernel.unload(body.model, tenant=caller.tenant))
    return {"model": body.model, "unloaded": unloaded}
