"""Canary routing and judging.

A request for ``NAME`` (or ``NAME:latest``) goes to the candidate when a hash of the canary's salt and
the request id falls under the share: deterministic per request id, and the salt is stored with the
policy, so a restarted daemon splits exactly as before. A request that names a version explicitly
(``NAME:v2``) is never rerouted.

Judging compares live feedback of the two arms, item by item (``votes``): once the candidate has
``min_ratings`` rated items, it is rolled back only when its share of good ratings is significantly
below the serving version's (Fisher's exact test); a canary that gathers too few ratings before its
deadline ends with the gate's verdict standing.
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
    requests: int  # answered by this arm
    rated: int  # rated items: one per input row a rating or correction judged
    mean: float | None  # mean vote (+1 / -1) of the rated items
    up: int = 0  # items voted +1

    @property
    def down(self) -> int:
        return self.rated - self.up


def votes(rating: int | None, correction: Any, items: int = 1) -> list[int]:
    """What one feedback row says of each of its request's ``items`` (input rows): a task correction
    (a list, one entry per row) votes -1 on each row it corrects and +1 on each it leaves ``null``
    (that answer was right); another correction votes -1 (the answer was wrong) unless a rating says
    otherwise; a rating alone votes on every row (a -1 on several rows is refused when it is given)."""
    if isinstance(correction, list):
        return [-1 if c is not None else 1 for c in correction]
    if correction is not None:
        return [rating if rating is not None else -1]
    return [rating] * max(1, items) if rating is not None else []


def arm_stats(db: Database, models: str | tuple[str, ...], tenant: str, since: datetime) -> Arm:
    """Requests of ``tenant`` answered by ``models`` (``name:tag`` as logged) since ``since``, and
    their feedback, counted per rated item."""
    names = (models,) if isinstance(models, str) else models
    mine = (RequestLog.model.in_(names), RequestLog.tenant == tenant, RequestLog.created_at >= since)
    with db.session() as s:
        n = s.scalar(select(func.count()).select_from(RequestLog).where(*mine, RequestLog.status == 200)) or 0
        rows = s.execute(select(Feedback.rating, Feedback.correction, RequestLog.output)
                         .join(RequestLog, RequestLog.id == Feedback.request_id).where(*mine)).all()
    items = [v for r, c, out in rows for v in votes(r, c, len(out) if isinstance(out, list) else 1)]
    up = sum(1 for v in items if v > 0)
    return Arm(n, len(items), sum(items) / len(items) if items else None, up)


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str
    p_value: float | None = None


def judge(candidate: Arm, serving: Arm, *, alpha: float = 0.05) -> Verdict:
    """Roll back only when the candidate's live ratings are worse than the serving version's with
    significance: Fisher's exact test, one-sided, on (up, down) of both arms, p < ``alpha``. A difference
    a few ratings could make is no evidence against a candidate the gate passed: it is promoted."""
    if candidate.rated == 0 or serving.rated == 0:
        return Verdict(True, "no live ratings on one arm: the gate's result stands")
    from scipy.stats import fisher_exact  # imported on first judgement: scipy is slow to load

    p = float(fisher_exact([[candidate.up, candidate.down], [serving.up, serving.down]], alternative="less").pvalue)
    said = (f"live rating {candidate.mean:+.3f} ({candidate.rated} rated) vs the serving version's "
            f"{serving.mean:+.3f} ({serving.rated} rated), one-sided Fisher p={p:.3f}")
    if p < alpha:
        return Verdict(False, f"{said} < {alpha}: significantly worse", p)
    return Verdict(True, f"{said} >= {alpha}: not significantly worse", p)
