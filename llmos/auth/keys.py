"""API keys: created with a random secret shown once, stored only as its SHA-256, looked up by hash.

A raw key is ``llmos-`` + 43 url-safe characters (256 random bits). With that much entropy a plain
SHA-256 is as strong as a slow password hash and costs microseconds per request, and the database
never holds anything that would let a reader call the API.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select

from llmos.auth.scopes import check_scopes
from llmos.db.engine import Database
from llmos.db.tables import ApiKey, utcnow
from llmos.errors import InvalidInput, NotFound

PREFIX = "llmos-"
_RAW = re.compile(r"^llmos-[A-Za-z0-9_-]{43}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key (never its secret or hash)."""

    id: str
    tenant: str
    name: str
    scopes: list[str]
    rate_limit: float | None
    token_quota: int | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class Principal:
    """Who an authenticated request acts as."""

    key_id: str
    tenant: str
    scopes: frozenset[str]
    name: str
    rate_limit: float | None = None
    token_quota: int | None = None


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise InvalidInput(f"tenant {tenant!r} is not valid: use 1-128 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit", param="tenant")
    return tenant


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 128 or any(ord(c) < 32 for c in name):
        raise InvalidInput("key name must be 1-128 printable characters", param="name")
    return name


def _check_limits(rate_limit: float | None, token_quota: int | None) -> None:
    if rate_limit is not None and not (0 < float(rate_limit) <= 1e6):
        raise InvalidInput("rate_limit must be a positive number of requests per second", param="rate_limit")
    if token_quota is not None and (isinstance(token_quota, bool) or int(token_quota) < 1):
        raise InvalidInput("token_quota must be a positive number of tokens per day", param="token_quota")


def aware(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time stored here is UTC."""
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.tenant, row.name, list(row.scopes or []), row.rate_limit, row.token_quota,
                   aware(row.created_at), aware(row.revoked_at))  # type: ignore[arg-type]


def create_key(db: Database, *, tenant: str, name: str, scopes: list[str], rate_limit: float | None = None,
               token_quota: int | None = None) -> tuple[KeyInfo, str]:
    """Create a key; returns its info and the raw key, which is never retrievable again."""
    check_tenant(tenant)
    name = _check_name(name)
    wanted = check_scopes(scopes)
    _check_limits(rate_limit, token_quota)
    raw = PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id="key_" + secrets.token_hex(8), tenant=tenant, name=name, hash=hash_key(raw), scopes=wanted,
                 rate_limit=None if rate_limit is None else float(rate_limit),
                 token_quota=None if token_quota is None else int(token_quota), created_at=utcnow())
    with db.session() as s:
        s.add(row)
    return _info(row), raw


def authenticate(db: Database, raw_key: str) -> Principal | None:
    """The principal of a live key; None for anything malformed, unknown or revoked."""
    if not isinstance(raw_key, str) or not _RAW.match(raw_key):
        return None
    with db.session() as s:
        row = s.scalars(select(ApiKey).where(ApiKey.hash == hash_key(raw_key))).first()
        if row is None or row.revoked_at is not None:
            return None
        return Principal(row.id, row.tenant, frozenset(row.scopes or []), row.name, row.rate_limit,
                         row.token_quota)


def principal_of(db: Database, key_id: str) -> Principal | None:
    """The principal of the live key ``key_id`` (a job runner acting for it); None when unknown or revoked."""
    with db.session() as s:
        row = s.get(ApiKey, key_id)
        if row is None or row.revoked_at is not None:
            return None
        return Principal(row.id, row.tenant, frozenset(row.scopes or []), row.name, row.rate_limit,
                         row.token_quota)


def get_key(db: Database, key_id: str, *, tenant: str | None = None) -> KeyInfo:
    """One key; NotFound also when it belongs to another tenant than ``tenant`` (when given)."""
    with db.session() as s:
        row = s.get(ApiKey, key_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            raise NotFound(f"key {key_id!r} not found")
        return _info(row)


def revoke(db: Database, key_id: str, *, tenant: str | None = None) -> KeyInfo:
    """Revoke a key (idempotent: revoking a revoked key keeps its first revocation time)."""
    with db.session() as s:
        row = s.get(ApiKey, key_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            raise NotFound(f"key {key_id!r} not found")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return _info(row)


def list_keys(db: Database, tenant: str | None = None, *, include_revoked: bool = True) -> list[KeyInfo]:
    """Keys oldest first, all tenants unless ``tenant`` is given."""
    q = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if tenant is not None:
        q = q.where(ApiKey.tenant == tenant)
    if not include_revoked:
        q = q.where(ApiKey.revoked_at.is_(None))
    with db.session() as s:
        return [_info(r) for r in s.scalars(q)]


def has_admin_key(db: Database) -> bool:
    """Whether any live key carries the admin scope (decides the first-start bootstrap)."""
    return any("admin" in k.scopes for k in list_keys(db, include_revoked=False))
