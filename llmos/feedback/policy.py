"""Loop policies: per served model name, when to retrain and how a candidate must prove itself.

The policy row (``loop_policies``) also holds where the current round stands, so a daemon restart
continues it: ``idle`` (collecting feedback) -> ``training`` (a ``train`` job runs) -> ``gating`` (an
``evaluate`` job scores the candidate against the serving version; ``job_id`` is then the gate's job)
-> ``canary`` (the candidate serves a share of traffic) -> ``idle``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select

from llmos.db.engine import Database
from llmos.db.tables import LoopPolicy
from llmos.errors import InvalidInput, NotFound
from llmos.store.names import parse_ref
from llmos.train.methods import method_names


class LoopSettings(BaseModel):
    """What a user sets with ``llmos loop set NAME ...``."""

    model_config = ConfigDict(extra="forbid")

    min_feedback: int = Field(20, ge=1, description="new corrected items that start a retrain")
    holdout: float = Field(0.2, ge=0.05, le=0.5, description="share of the feedback kept aside for the gate")
    margin: float = Field(0.01, ge=0, le=1, description="how much better on the fair held-out rows a candidate "
                                                        "must be, at the lower bound of its paired gain")
    confidence: float = Field(0.9, ge=0.5, lt=1, description="confidence of that lower bound (paired bootstrap)")
    thumbs_up_train: bool = Field(False, description="chat: answers rated +1 join the training rows (never the "
                                                     "held-out ones)")
    method: str | None = Field(None, description="the retrain's method (default: the serving version's); `dpo` "
                                                 "trains a chat model on its preference pairs")
    min_pairs: int = Field(4, ge=1, description="with method dpo: trained preference pairs a round waits for")
    judge: str | None = Field(None, min_length=1, description="chat models: a stored chat model that compares "
                              "both versions' answers in the gate and vetoes a candidate it confidently finds "
                              "worse (off by default: a 135M model is a weak judge)")
    val_tolerance: float = Field(0.0, ge=0, le=1, description="how far the original validation score may fall")
    canary_share: float = Field(0.2, gt=0, lt=1, description="share of traffic the candidate gets in its canary")
    canary_min: int = Field(30, ge=1, description="rated items on the candidate's arm before the canary is judged")
    canary_alpha: float = Field(0.05, gt=0, lt=0.5, description="significance a worse live rating needs to roll "
                                "the candidate back (one-sided Fisher exact test)")
    canary_max_hours: float = Field(24.0, gt=0, le=24 * 90, description="a canary still short of canary_min "
                                    "ratings after this long ends with the gate's verdict standing")
    seed: int = Field(0, ge=0, description="seeds the held-out choice and the canary split")
    enabled: bool = True
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="overrides for the retrain job")
    first_base: str | None = Field(None, min_length=1, description="a prompt task's first fine-tuned version trains "
                                   "from this model (default: the task's base when it is an encoder, else minilm-l6)")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str | None) -> str | None:
        if value is not None and value not in method_names():
            raise ValueError(f"unknown method {value!r}; use one of {', '.join(method_names())}")
        return value

    @classmethod
    def parse(cls, data: dict[str, Any]) -> "LoopSettings":
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "policy"
            raise InvalidInput(f"{where}: {first['msg']}", param=where) from None


@dataclass
class PolicyState:
    name: str
    tenant: str
    settings: LoopSettings
    state: str
    root_dataset: str | None
    job_id: str | None
    candidate: str | None
    baseline: str | None
    feedback_cutoff: int
    round_cutoff: int
    canary: dict[str, Any] | None

    def to_api(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "settings": self.settings.model_dump(),
                "root_dataset": self.root_dataset, "job_id": self.job_id, "candidate": self.candidate,
                "feedback_used_upto": self.feedback_cutoff, "canary": self.canary}


class Policies:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Policies belong to a tenant's name: (tenant, name) is the key, so two tenants' NAME never meet.
    def set(self, name: str, tenant: str, changes: dict[str, Any]) -> PolicyState:
        """Create or update ``name``'s policy; fields not given keep their value (or the default)."""
        name = parse_ref(name).name
        with self.db.session() as s:
            row = s.get(LoopPolicy, (tenant, name))
            merged = LoopSettings.parse({**(row.settings if row else {}), **changes})
            if row is None:
                row = LoopPolicy(name=name, tenant=tenant, state="idle", feedback_cutoff=0, round_cutoff=0)
                s.add(row)
            row.settings = merged.model_dump()
            s.flush()
            return _state(row)

    def get(self, name: str, tenant: str) -> PolicyState:
        with self.db.session() as s:
            row = s.get(LoopPolicy, (tenant, parse_ref(name).name))
            if row is None:
                raise NotFound(f"model {name!r} has no loop policy; set one with `llmos loop set {name}`")
            return _state(row)

    def find(self, name: str, tenant: str) -> PolicyState | None:
        with self.db.session() as s:
            row = s.get(LoopPolicy, (tenant, name))
            return _state(row) if row else None

    def list(self, tenant: str | None = None) -> list[PolicyState]:
        q = select(LoopPolicy).order_by(LoopPolicy.tenant, LoopPolicy.name)
        if tenant is not None:
            q = q.where(LoopPolicy.tenant == tenant)
        with self.db.session() as s:
            return [_state(r) for r in s.scalars(q)]

    def update(self, name: str, tenant: str, *, expect: str | None = None, **fields: Any) -> bool:
        """Change round fields in one transaction; with ``expect``, only if the state is still that
        (a rollback racing the loop wins cleanly: the loop's stale update does nothing)."""
        with self.db.session() as s:
            row = s.get(LoopPolicy, (tenant, name))
            if row is None or (expect is not None and row.state != expect):
                return False
            for key, value in fields.items():
                setattr(row, key, value)
            return True


def _state(r: LoopPolicy) -> PolicyState:
    return PolicyState(r.name, r.tenant, LoopSettings.model_validate(r.settings or {}), r.state, r.root_dataset,
                       r.job_id, r.candidate, r.baseline, r.feedback_cutoff, r.round_cutoff, r.canary)
