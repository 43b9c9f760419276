"""Admin routes for API keys: ``POST /admin/keys`` (create; the raw key is in this answer alone),
``GET /admin/keys`` (list, never a raw key or its hash), ``DELETE /admin/keys/{key_id}`` (revoke).

They need the ``admin`` scope (``llmos.auth.policy``), as ``llmos keys`` needs local access: an admin is
the operator of every tenant, so it names the tenant a new key acts for (default: its own). Each change
is an ``audit_events`` row (``key_create`` / ``key_revoke``, the acting key as the actor) besides the
middleware's ``admin_action``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from llmos.api.deps import Caller, get_caller, get_runtime
from llmos.auth import audit, create_key, list_keys, revoke
from llmos.auth.keys import KeyInfo, check_tenant
from llmos.runtime import Runtime

router = APIRouter(prefix="/admin/keys", tags=["admin"])
CallerDep = Annotated[Caller, Depends(get_caller)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: Optional[str] = Field(None, max_length=128, description="the tenant the key acts for (default: the caller's)")
    scopes: list[str] = Field(min_length=1, max_length=8, description="read, infer, train and/or admin")
    name: str = Field("key", min_length=1, max_length=128, description="a label for people")
    rate_limit: Optional[float] = Field(None, gt=0, le=1e6, description="requests per second")
    token_quota: Optional[int] = Field(None, ge=1, le=10**15, description="tokens per UTC day")


class KeyOut(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    tenant: str
    name: str
    scopes: list[str]
    rate_limit: Optional[float]
    token_quota: Optional[int]
    created_at: datetime
    revoked_at: Optional[datetime]

    @classmethod
    def of(cls, info: KeyInfo) -> KeyOut:
        return cls(id=info.id, tenant=info.tenant, name=info.name, scopes=info.scopes, rate_limit=info.rate_limit,
                   token_quota=info.token_quota, created_at=info.created_at, revoked_at=info.revoked_at)


class CreatedKeyOut(KeyOut):
    key: str  # the raw key: shown in this answer only


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyOut]


@router.post("", status_code=201)
async def create(body: KeyIn, runtime: RuntimeDep, caller: CallerDep) -> CreatedKeyOut:
    """Create a key; its raw value is returned once and only its hash is stored."""
    tenant = check_tenant(body.tenant or caller.tenant)

    def make() -> tuple[KeyInfo, str]:
        info, raw = create_key(runtime.db, tenant=tenant, name=body.name, scopes=body.scopes,
                               rate_limit=body.rate_limit, token_quota=body.token_quota)
        audit(runtime.db, caller.key_id or "local", tenant, "key_create", info.id, scopes=info.scopes,
              name=info.name, rate_limit=info.rate_limit, token_quota=info.token_quota, by_tenant=caller.tenant)
        return info, raw

    info, raw = await run_in_threadpool(make)
    return CreatedKeyOut(**KeyOut.of(info).model_dump(), key=raw)


@router.get("")
async def list_(runtime: RuntimeDep,
                tenant: Annotated[Optional[str], Query(max_length=128, description="only this tenant's keys")] = None,
                include_revoked: bool = True) -> KeyList:
    """Keys oldest first (every tenant's unless ``tenant`` is given); never a raw key or its hash."""
    if tenant is not None:
        check_tenant(tenant)
    keys = await run_in_threadpool(lambda: list_keys(runtime.db, tenant, include_revoked=include_revoked))
    return KeyList(data=[KeyOut.of(k) for k in keys])


@router.delete("/{key_id}")
async def revoke_(key_id: Annotated[str, Path(max_length=64)], runtime: RuntimeDep, caller: CallerDep) -> KeyOut:
    """Revoke a key at once (its next request is a 401); revoking a revoked key changes nothing."""

    def run() -> KeyInfo:
        info = revoke(runtime.db, key_id)
        audit(runtime.db, caller.key_id or "local", info.tenant, "key_revoke", info.id, by_tenant=caller.tenant)
        return info

    return KeyOut.of(await run_in_threadpool(run))
