"""The audit log: every admin action and every denial is one ``audit_events`` row."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from llmos.auth.keys import aware
from llmos.db.engine import Database
from llmos.db.tables import AuditEvent

log = logging.getLogger("llmos.audit")


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    tenant: str
    action: str
    target: str | None
    detail: dict[str, Any]


def audit(db: Database, actor: str, tenant: str, action: str, target: str | None = None,
          **detail: Any) -> None:
    """Record one event in its own transaction (so it survives the failure of the request it describes).

    ``actor`` is a key id, ``"anonymous"`` or ``"cli"``; ``detail`` must be JSON-serialisable.
    """
    with db.session() as s:
        s.add(AuditEvent(actor=str(actor)[:128], tenant=str(tenant)[:128], action=action[:64],
                         target=None if target is None else str(target)[:260], detail=detail))
    log.info("audit %s actor=%s tenant=%s target=%s %s", action, actor, tenant, target, detail or "")


def list_audit(db: Database, *, tenant: str | None = None, action: str | None = None,
               limit: int = 100) -> list[AuditRecord]:
    """Newest first; ``tenant`` / ``action`` narrow it."""
    q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(max(1, min(limit, 10_000)))
    if tenant is not None:
        q = q.where(AuditEvent.tenant == tenant)
    if action is not None:
        q = q.where(AuditEvent.action == action)
    with db.session() as s:
        return [AuditRecord(r.id, aware(r.at), r.actor, r.tenant, r.action, r.target, dict(r.detail or {}))
                for r in s.scalars(q)]
