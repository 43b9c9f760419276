"""Canary routing and judging.

A request for ``NAME`` (or ``NAME:latest``) goes to the candidate when a hash of the canary's salt and
the request id falls under the share: deterministic per request id, and the salt is stored with the
policy, so a restarted daemon splits exactly as before. A request that names a version explicitly
(``NAME:v2``) is never rerouted.

Judging compares live feedback of the two arms: each rated request scores its rating, a correction
without a rating scores -1 (the answer was wrong).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from llmos.db.engine import Database
from llmos.db.tables import Feedback, LoopPolicy, RequestLog

CACHE_S = 1.0  # a canary started or ended by another process is seen within this


def to_candidate(salt: str, request_id: str, share: float) -> bool:
    digest = hashlib.sha256(f"{salt}\x00{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class CanaryRouter:
    """``route(name, request_id, tenant) -> name to resolve``; what the kernel calls in front of resolve.
    Canaries belong to a tenant's name: another tenant's request for the same name is never rerouted."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, str], dict[str, Any]] = {}
        self._learning: set[tuple[str, str]] = set()
        self._loaded = float("-inf")

    def refresh(self) -> None:
        with self.db.session() as s:
            rows = s.scalars(select(LoopPolicy)).all()
            routes = {(r.tenant, r.name): dict(r.canary) for r in rows if r.state == "canary" and r.canary}
            learning = {(r.tenant, r.name) for r in rows}
        with self._lock:
            self._routes, self._learning, self._loaded = routes, learning, time.monotonic()

    def _fresh(self) -> None:
        if time.monotonic() - self._loaded > CACHE_S:
            self.refresh()

    def learns(self, name: str, tenant: str) -> bool:
        """Whether ``tenant``'s ``name`` has a loop policy (its task inputs are then kept in the request log)."""
        self._fresh()
        return (tenant, name.partition(":")[0]) in self._learning

    def shares(self) -> list[tuple[str, str, float]]:
        """(name, candidate version tag, share) of each running canary, for metrics (admin only)."""
        self._fresh()
        return [(n, c["candidate"].partition(":")[2], float(c["share"])) for (_, n), c in self._routes.items()]

    def route(self, name: str, request_id: str, tenant: str | None) -> str:
        self._fresh()
        base, _, tag = name.partition(":")
        canary = self._routes.get((tenant, base)) if tenant is not None else None
        if canary is None or tag not in ("", "latest"):
            return name
        return canary["candidate"] if to_candidate(canary["salt"], request_id, canary["share"]) else name


@dataclass
class Arm:
    requests: int
    rated: int
    mean: float | None


def arm_stats(db: Database, model: str, tenant: str, since: datetime) -> Arm:
    """Requests of ``tenant`` answered by ``model`` (a ``name:tag`` as logged) since ``since``, and
    their feedback."""
    mine = (RequestLog.model == model, RequestLog.tenant == tenant, RequestLog.created_at >= since)
    with db.session() as s:
        n = s.scalar(select(func.count()).select_from(RequestLog).where(*mine, RequestLog.status == 200)) or 0
        rows = s.execute(select(Feedback.rating, Feedback.correction)
                         .join(RequestLog, RequestLog.id == Feedback.request_id).where(*mine)).all()
    votes = [r if r is not None else -1 for r, c in rows if r is not None or c is not None]
    return Arm(n, len(votes), sum(votes) / len(votes) if votes else None)


def judge(candidate: Arm, serving: Arm) -> tuple[bool, str]:
    """Promote unless the candidate's live rating is below the serving version's."""
    if candidate.mean is None or serving.mean is None:
        return True, "no live ratings on one arm: the gate's result stands"
    if candidate.mean < serving.mean:
        return False, f"live rating {candidate.mean:+.3f} below the serving version's {serving.mean:+.3f}"
    return True, f"live rating {candidate.mean:+.3f} vs the serving version's {serving.mean:+.3f}"
