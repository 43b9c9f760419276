"""Rated answers: what users said of the answers themselves, beside their corrections.

* A thumbs-up without a correction confirms the logged answer: it becomes an example whose target is
  that answer. So does each row a batched request's correction list leaves ``null`` ("that one was
  right"): a partial correction vouches for the rows it leaves. Held out, it lets the gate score both versions fairly (the serving version is right on
  these as it is wrong on the corrections); trained on (a policy setting), it reinforces good answers.
* A thumbs-down on a chat or completion answer names a worse answer: with the correction of the same
  request, or a confirmed answer to the same input, it makes a preference pair (chosen, rejected).

Only requests whose input and output were kept (models with a loop policy) can be read back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select

from llmos.db.engine import Database
from llmos.db.tables import Feedback, RequestLog
from llmos.feedback.shapes import TEXT_ROUTES, Example, inputs_of


@dataclass(frozen=True)
class Rated:
    feedback_id: int
    request_id: str
    model: str
    route: str
    rating: int  # 0: no rating (a correction alone)
    corrected: bool
    inputs: list[str]
    outputs: list[Any]  # one logged answer per input
    cut_off: bool = False  # the answer did not finish (a stream the client left): never a confirmed answer
    vouched: tuple[bool, ...] = ()  # per input: the user confirmed that row's answer


def _vouched(rating: int, correction: Any, n: int) -> tuple[bool, ...]:
    if correction is None:
        return (rating > 0,) * n
    if isinstance(correction, list) and len(correction) == n and any(c is not None for c in correction):
        return tuple(c is None for c in correction)
    return (False,) * n


def rated(db: Database, name: str, tenant: str, *, upto: int | None = None) -> list[Rated]:
    """Every rated or corrected request of any version of ``name`` whose input and output were kept,
    oldest first."""
    q = (select(Feedback, RequestLog).join(RequestLog, RequestLog.id == Feedback.request_id)
         .where(Feedback.tenant == tenant, Feedback.rating.is_not(None) | Feedback.correction.is_not(None),
                RequestLog.model.like(f"{name}:%"))
         .order_by(Feedback.id))
    if upto is not None:
        q = q.where(Feedback.id <= upto)
    out = []
    with db.session() as s:
        for f, r in s.execute(q):
            inputs = inputs_of(r.route, r.prompt)
            if inputs is None or r.output is None:
                continue
            outputs = r.output if r.route in ("classify", "tag") and isinstance(r.output, list) else [r.output]
            if len(outputs) != len(inputs):
                continue
            rating = int(f.rating or 0)
            out.append(Rated(f.id, r.id, r.model, r.route, rating, f.correction is not None, inputs, outputs,
                             cut_off=r.status != 200, vouched=_vouched(rating, f.correction, len(inputs))))
    return out


def confirmed(answers: list[Rated], routes: tuple[str, ...] | None = None) -> list[Example]:
    """Confirmed answers (thumbs-up without a correction, and the rows a partial correction left), as
    examples whose target is the logged answer; only those of ``routes`` when given."""
    out = []
    for a in answers:
        if a.cut_off or (routes is not None and a.route not in routes):
            continue
        out.extend(Example(a.feedback_id, a.request_id, a.model, a.route, text, _target(a.route, answer))
                   for text, answer, ok in zip(a.inputs, a.outputs, a.vouched) if ok and answer is not None)
    return out


def with_rejected(examples: list[Example], answers: list[Rated]) -> list[Example]:
    """Chat / completion corrections given a rejected answer: the thumbs-down answer they correct."""
    worse = {a.feedback_id: str(a.outputs[0]) for a in answers if a.rating < 0 and a.route in TEXT_ROUTES}
    return [replace(e, rejected=worse[e.feedback_id]) if e.route in TEXT_ROUTES and e.feedback_id in worse
            and worse[e.feedback_id].strip() != str(e.target).strip() else e for e in examples]


def preferred_over_rejected(answers: list[Rated]) -> list[Example]:
    """Thumbs-down answers without a correction, paired with a confirmed answer to the same input."""
    good = {(a.route, a.inputs[0]): a for a in answers
            if a.rating > 0 and not a.corrected and not a.cut_off and a.route in TEXT_ROUTES}
    out = []
    for a in answers:
        match = good.get((a.route, a.inputs[0])) if a.rating < 0 and not a.corrected else None
        if match is not None and str(match.outputs[0]).strip() != str(a.outputs[0]).strip():
            out.append(Example(a.feedback_id, a.request_id, a.model, a.route, a.inputs[0], str(match.outputs[0]),
                               rejected=str(a.outputs[0])))
    return out


def _target(route: str, answer: Any) -> Any:
    """A logged answer in the shape of a correction (tag spans keep start, end and label alone)."""
    if route == "tag" and isinstance(answer, list):
        return [{"start": s["start"], "end": s["end"], "label": s["label"]} for s in answer if isinstance(s, dict)]
    return answer
