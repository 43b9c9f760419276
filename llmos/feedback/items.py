"""Feedback rows: submit (validated against the request it names, idempotent), list, and the
corrected examples of one model name for the loop.

A request id that is unknown or belongs to another tenant gets the same NotFound, so a caller learns
nothing about other tenants' traffic. A body equal to the stored one changes nothing; a different one
replaces it (the latest word of a user counts). The row is committed before the caller hears back.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import null, select, update

from llmos.db.engine import Database
from llmos.db.tables import Feedback, RequestLog
from llmos.errors import InvalidInput, NotFound
from llmos.feedback.rated import confirmed, rated
from llmos.feedback.shapes import CHARS_PER_TOKEN, Example, inputs_of, normalise
from llmos.store.registry import Registry


CUT_OFF = 499  # the request log's status of an answer whose client went away mid-stream


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=64)
    rating: Literal[1, -1] | None = None
    correction: Any = None
    comment: str | None = Field(None, max_length=4000)

    @model_validator(mode="after")
    def _something(self) -> "FeedbackIn":
        if self.rating is None and self.correction is None and not self.comment:
            raise ValueError("give a rating (+1 or -1), a correction or a comment")
        return self


class FeedbackOut(BaseModel):
    id: int
    request_id: str
    model: str
    route: str
    rating: int | None
    correction: Any
    comment: str | None
    created_at: datetime
    citations: list[dict[str, Any]] | None = None  # the passages a grounded answer was given, from its request
    changed: bool = True  # False when the same feedback was already stored
    cut_off: bool = False  # the answer it rates was cut off (a stream the client left): kept, never confirmed


class FeedbackStore:
    def __init__(self, db: Database, registry: Registry) -> None:
        self.db = db
        self.registry = registry

    def submit(self, body: FeedbackIn, tenant: str) -> FeedbackOut:
        """Store (or update) the feedback on ``body.request_id``; NotFound for unknown or foreign ids."""
        with self.db.session() as s:
            req = s.get(RequestLog, body.request_id)
            if req is None or req.tenant != tenant:
                raise NotFound(f"no request {body.request_id!r}: feedback names the id of one of your own "
                               "responses (its `id` field or X-Request-Id header)")
            _check_rating(req, body)
            correction = None if body.correction is None else self._normalise(req, body.correction)
            row = s.scalars(select(Feedback).where(Feedback.request_id == req.id, Feedback.tenant == tenant)).first()
            new = (body.rating, correction, body.comment)
            if row is not None and (row.rating, row.correction, row.comment) == new:
                return _out(row, req, changed=False)
            if row is not None and row.correction != correction:
                s.delete(row)  # a changed correction is new evidence: it gets a new id the loop counts
                s.flush()
                row = None
            if row is None:
                row = Feedback(request_id=req.id, tenant=tenant)
                s.add(row)
            row.rating, row.correction, row.comment = new
            s.flush()
            return _out(row, req, changed=True)

    def _normalise(self, req: RequestLog, correction: Any) -> Any:
        inputs = inputs_of(req.route, req.prompt)
        n = _inputs(req)
        info = self.registry.find(req.model, tenant=req.tenant)
        labels = list(info.manifest.labels) if info is not None else []
        context = info.manifest.context_length if info is not None else None
        return normalise(req.route, correction, inputs, n, labels, context * CHARS_PER_TOKEN if context else None)

    def list(self, tenant: str, *, model: str | None = None, after: int = 0, limit: int = 1000) -> list[FeedbackOut]:
        """Oldest first; ``model`` is a name (every version) or ``name:tag``."""
        q = (select(Feedback, RequestLog).join(RequestLog, RequestLog.id == Feedback.request_id)
             .where(Feedback.tenant == tenant, Feedback.id > after).order_by(Feedback.id).limit(max(1, limit)))
        if model:
            q = q.where(RequestLog.model == model) if ":" in model else q.where(RequestLog.model.like(f"{model}:%"))
        with self.db.session() as s:
            return [_out(f, r) for f, r in s.execute(q)]

    def examples(self, name: str, tenant: str, *, upto: int | None = None) -> list[Example]:
        """Every corrected input on any version of ``name`` (feedback id <= ``upto``), oldest first."""
        q = (select(Feedback, RequestLog).join(RequestLog, RequestLog.id == Feedback.request_id)
             .where(Feedback.tenant == tenant, Feedback.correction.is_not(None), RequestLog.model.like(f"{name}:%"))
             .order_by(Feedback.id))
        # a JSON null (rating-only feedback) passes the SQL filter
        return self._collect(q, upto, lambda f, r: _examples(f, r) if f.correction is not None else [])

    def confirmed(self, name: str, tenant: str, *, upto: int | None = None) -> list[Example]:
        """Classify and tag answers of any version of ``name`` a user confirmed (feedback id <= ``upto``),
        oldest first (``llmos.feedback.rated.confirmed``): the zero-shot start learns from them."""
        return confirmed(rated(self.db, name, tenant, upto=upto), routes=("classify", "tag"))

    def _collect(self, q: Any, upto: int | None, convert: Any) -> list[Example]:
        """``convert(feedback, request_log)`` over the query's rows (feedback id <= ``upto``), in order."""
        if upto is not None:
            q = q.where(Feedback.id <= upto)
        with self.db.session() as s:
            return [e for f, r in s.execute(q) for e in convert(f, r)]

    def last_id(self) -> int:
        with self.db.session() as s:
            return s.scalar(select(Feedback.id).order_by(Feedback.id.desc()).limit(1)) or 0


def _examples(f: Feedback, r: RequestLog) -> list[Example]:
    inputs = inputs_of(r.route, r.prompt)
    if inputs is None:  # the input was not kept: nothing to learn from
        return []
    targets = f.correction if r.route in ("classify", "tag") else [f.correction]
    return [Example(f.id, r.id, r.model, r.route, text, target)
            for text, target in zip(inputs, targets) if target is not None]


def erase_old_text(db: Database, days: float, now: datetime | None = None) -> int:
    """Erase the prompt and output text of request-log rows older than ``days`` (0: keep it); the rows
    stay (ids, counts, timing, feedback). A correction whose input is erased is no longer learnt from;
    round datasets already made keep their rows. Returns how many rows lost their text."""
    if days <= 0:
        return 0
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=days)
    with db.session() as s:
        # prompt and output are kept together (LogEntry.keep / log_prompts): the prompt says which rows hold text
        result = s.execute(update(RequestLog).where(RequestLog.created_at < cutoff, RequestLog.prompt.is_not(None))
                           .values(prompt=None, output=null()))
        return int(getattr(result, "rowcount", 0) or 0)


def _inputs(req: RequestLog) -> int:
    """How many inputs a logged request had (1 when neither its inputs nor its outputs were kept)."""
    inputs = inputs_of(req.route, req.prompt)
    outputs = req.output if isinstance(req.output, list) else None
    return len(inputs) if inputs is not None else len(outputs) if outputs is not None else 1


def _check_rating(req: RequestLog, body: FeedbackIn) -> None:
    """A -1 on a request of several inputs must say which answers were wrong: a thumbs-down on a batch
    of 9 where one answer was wrong would count 9 wrong answers against the version that gave them."""
    n = _inputs(req) if req.route in ("classify", "tag") else 1
    if body.rating == -1 and body.correction is None and n > 1:
        raise InvalidInput(f"a rating of -1 on a request with {n} inputs must name the wrong answers: add a "
                           f"correction with {n} entries (the right answer for each wrong one, null for each "
                           "right one), or rate it +1 if every answer was right", param="rating")


def corrected_items(correction: Any, route: str) -> int:
    """How many items a stored correction corrects: one per non-null entry of a task route's list."""
    if correction is None:
        return 0
    if route in ("classify", "tag") and isinstance(correction, list):
        return sum(1 for c in correction if c is not None)
    return 1


def _out(f: Feedback, r: RequestLog, changed: bool = True) -> FeedbackOut:
    return FeedbackOut(id=f.id, request_id=f.request_id, model=r.model, route=r.route, rating=f.rating,
                       correction=f.correction, comment=f.comment, created_at=f.created_at,
                       citations=r.citations, changed=changed, cut_off=r.status == CUT_OFF)
