"""The first admin key: made at the first start with auth on, shown once, never made again.

"Never again" is kept by the audit log: once a bootstrap event exists (or any admin key was ever made),
a later start with no live admin key does not mint a new one; the operator makes one locally with
``llmos keys create --scope admin`` (the CLI works on the database directly, so it needs no key).
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from llmos.auth.audit import audit
from llmos.auth.keys import create_key
from llmos.auth.scopes import ADMIN
from llmos.db.engine import Database
from llmos.db.tables import ApiKey, AuditEvent

ACTION = "bootstrap_admin_key"
log = logging.getLogger("llmos.auth")


def _ever_had_admin(db: Database) -> bool:
    with db.session() as s:
        if s.scalars(select(AuditEvent.id).where(AuditEvent.action == ACTION).limit(1)).first() is not None:
            return True
        return any(ADMIN in (scopes or []) for scopes in s.scalars(select(ApiKey.scopes)))


def ensure_admin_key(db: Database, tenant: str = "default") -> str | None:
    """The raw key of a newly made admin key, or None when one was made before."""
    if _ever_had_admin(db):
        return None
    info, raw = create_key(db, tenant=tenant, name="bootstrap admin", scopes=[ADMIN])
    audit(db, "daemon", tenant, ACTION, info.id)
    return raw


def announce_bootstrap(db: Database) -> str | None:
    """At daemon start: make the first admin key if due and print it once to stdout (never to the log)."""
    raw = ensure_admin_key(db)
    if raw is not None:
        print("\n" + "=" * 72 + "\nllmos: authentication is on and no admin key existed, so one was made.\n"
              f"  admin API key: {raw}\nIt is shown only this once; store it now (e.g. LLMOS_API_KEY).\n"
              + "=" * 72 + "\n", flush=True)
        log.warning("created the first admin API key (printed once on stdout)")
    return raw
