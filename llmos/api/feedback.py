"""Feedback and the self-improvement loop over HTTP.

``POST /v1/feedback`` rates or corrects one response by its request id; ``GET /v1/feedback`` lists
the caller's feedback. ``/v1/loop/...`` sets a model's loop policy, shows its history (versions,
gates, canaries) and rolls it back.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from llmos.api.bounds import NAME_MAX, Cursor, ModelFilter, PageSize
from llmos.api.deps import Caller, get_caller
from llmos.feedback.items import FeedbackIn, FeedbackOut
from llmos.feedback.judge import check_judge
from llmos.feedback.loop import Loop
from llmos.store.names import parse_ref

router = APIRouter(prefix="/v1", tags=["feedback"])
CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_loop(request: Request) -> Loop:
    return request.app.state.loop


LoopDep = Annotated[Loop, Depends(get_loop)]


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str | None = Field(None, max_length=NAME_MAX,
                           description="version to serve (default: the one that served before)")


def actor(caller: Caller) -> str:
    return caller.key_id or "anonymous"


# Plain ``def`` handlers: FastAPI runs them in its thread pool (database reads and writes).
@router.post("/feedback")
def post_feedback(body: FeedbackIn, loop: LoopDep, caller: CallerDep) -> FeedbackOut:
    return loop.feedback.submit(body, caller.tenant)


@router.get("/feedback")
def list_feedback(loop: LoopDep, caller: CallerDep, model: ModelFilter | None = None, after: Cursor = 0,
                  limit: PageSize = 1000) -> dict[str, Any]:
    found = loop.feedback.list(caller.tenant, model=model, after=after, limit=limit)
    return {"object": "list", "data": [f.model_dump(mode="json") for f in found]}


@router.get("/loop")
def list_policies(loop: LoopDep, caller: CallerDep) -> dict[str, Any]:
    return {"object": "list", "data": [p.to_api() for p in loop.policies.list(caller.tenant)]}


@router.put("/loop/{name}")
def set_policy(name: str, body: dict[str, Any], loop: LoopDep, caller: CallerDep) -> dict[str, Any]:
    loop.registry.get(f"{parse_ref(name).name}:latest", tenant=caller.tenant)  # a served model it may see
    loop.registry.check_write(name, caller.tenant, admin=caller.admin)  # its retrains write under the name
    if isinstance(body.get("judge"), str):
        check_judge(loop.registry, body["judge"], caller.tenant)  # a chat model the caller may read
    policy = loop.policies.set(name, caller.tenant, body)
    loop.router.refresh()
    return policy.to_api()


@router.get("/loop/{name}/history")
def history(name: str, loop: LoopDep, caller: CallerDep) -> dict[str, Any]:
    return loop.history(name, caller.tenant)


@router.post("/loop/{name}/rollback")
def rollback(name: str, loop: LoopDep, caller: CallerDep, body: RollbackIn | None = None) -> dict[str, Any]:
    return loop.rollback(name, caller.tenant, actor(caller), to=body.to if body else None, admin=caller.admin)


@router.post("/loop/tick")
def tick(loop: LoopDep) -> dict[str, Any]:
    """Advance every policy one step now (the daemon also does this every LLMOS_LOOP_INTERVAL)."""
    return {"actions": loop.tick()}
