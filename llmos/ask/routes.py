"""``POST /v1/ask`` (plan; with ``confirm``, plan and run) and ``POST /v1/ask/{plan_id}/run``.

Any key may ask (planning reads only the caller's own names); each step then needs its own route's
scope, checked when the plan is made (a refusal, nothing run) and again by the middleware as it runs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from llmos.api.access import bearer_token
from llmos.api.deps import Caller, get_caller
from llmos.ask.entities import gather
from llmos.ask.execute import run_steps
from llmos.ask.planner import Planner
from llmos.ask.plans import Plans
from llmos.ask.types import AskIn, AskOut
from llmos.errors import InvalidInput

router = APIRouter(prefix="/v1/ask", tags=["ask"])
CallerDep = Annotated[Caller, Depends(get_caller)]


class AskService:
    """The planner (its intent index is built once per embedding model) and the plans awaiting confirmation."""

    def __init__(self, planner: Planner) -> None:
        self.planner, self.plans = planner, Plans()

    @classmethod
    def of(cls, request: Request) -> AskService:
        state = request.app.state
        if getattr(state, "ask", None) is None:
            state.ask = cls(Planner(state.kernel))
        return state.ask


async def _plan(request: Request, body: AskIn, caller: Caller) -> AskOut:
    state = request.app.state
    entities = await run_in_threadpool(gather, state.runtime, getattr(state, "jobs", None), caller.tenant,
                                       body.local_files)
    return await AskService.of(request).planner.plan(body.text, entities, caller.tenant, caller.scopes)


async def _run(request: Request, plan: AskOut, caller: Caller) -> AskOut:
    local = [s.call.upload.path for s in plan.steps if s.call.upload is not None and s.call.upload.path]
    if local:  # the files are on the asking machine: only its client can send them
        raise InvalidInput(f"this plan uploads {', '.join(local)} from the machine that asked: run it with "
                           "`llmos ask` there, or upload the file to /v1/files and name its id", param="plan_id")
    results = await run_steps(request.app, bearer_token(request.scope), plan.steps, db=request.app.state.runtime.db,
                              actor=caller.key_id or "local", tenant=caller.tenant, plan_id=plan.id or "-")
    ran = [f"{plan.steps[r.step].summary}: {'done' if r.ok else f'failed ({_why(r.result)})'}" for r in results]
    skipped = len(plan.steps) - len(results)
    failed = any(not r.ok for r in results)
    message = "; ".join(ran) + (f"; {skipped} later step(s) not run" if skipped else "")
    return plan.model_copy(update={"status": "failed" if failed else "done", "results": results, "message": message})


def _why(result: object) -> str:
    if isinstance(result, dict) and isinstance(result.get("error"), dict):
        return str(result["error"].get("message", "error"))
    return str(result)[:200]


@router.post("")
async def ask(body: AskIn, request: Request, caller: CallerDep) -> AskOut:
    """Plan ``text``; the plan runs only with ``confirm`` (or through ``/v1/ask/{id}/run``)."""
    plan = await _plan(request, body, caller)
    if plan.status != "planned":
        return plan
    plan_id = AskService.of(request).plans.put(plan, caller.tenant, caller.key_id)
    plan = plan.model_copy(update={"id": plan_id})
    if body.confirm:
        AskService.of(request).plans.take(plan_id, caller.tenant, caller.key_id)
        return await _run(request, plan, caller)
    return plan


@router.post("/{plan_id}/run")
async def run_plan(plan_id: Annotated[str, Path(max_length=64)], request: Request, caller: CallerDep) -> AskOut:
    """Run a plan this key asked for (once)."""
    plan = AskService.of(request).plans.take(plan_id, caller.tenant, caller.key_id)
    return await _run(request, plan, caller)
