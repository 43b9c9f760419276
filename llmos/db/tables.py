"""SQLAlchemy table definitions. Changing them needs a new migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint,
                        text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Manifest(Base):
    """An immutable description of a model: its files (as blob digests) and metadata."""

    __tablename__ = "manifests"
    digest: Mapped[str] = mapped_column(String(71), primary_key=True)  # "sha256:<hex>"
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelTag(Base):
    """A ``name:tag`` pointing at a manifest; a model's versions are its tags.

    Names are per tenant: ``tenant`` NULL is a public model (built in, or published by an admin). A
    NULL never equals another in a unique constraint, so public names have a partial unique index.
    """

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("tenant", "name", "tag", name="uq_models_tenant_name_tag"),
                      Index("uq_models_public_name_tag", "name", "tag", unique=True,
                            sqlite_where=text("tenant IS NULL"), postgresql_where=text("tenant IS NULL")))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    tag: Mapped[str] = mapped_column(String(128))
    manifest_digest: Mapped[str] = mapped_column(ForeignKey("manifests.digest"))
    tenant: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class RegistryClock(Base):
    """One row whose ``tick`` every write of ``models`` / ``manifests`` moves on, in the same transaction:
    a process that caches what names resolve to reads this one number to know whether the store changed
    (writes come from the daemon and from job runners in other processes)."""

    __tablename__ = "registry_clock"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tick: Mapped[int] = mapped_column(Integer, default=0)


class Dataset(Base):
    """One immutable dataset version: rows as a canonical-JSONL blob (``digest``) plus what they are.

    Versions count per tenant and name, so two tenants can each own a ``sst2`` without seeing the other.
    """

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("tenant", "name", "version", name="uq_datasets_tenant_name_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    digest: Mapped[str] = mapped_column(String(71))
    task: Mapped[str] = mapped_column(String(32))
    schema: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    labels: Mapped[list[Any]] = mapped_column(JSON, default=list)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"), nullable=True)
    tenant: Mapped[str] = mapped_column(String(128), default="default", index=True)
    # how a derived version was made from its parent: operation, parameters, report
    derivation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[int] = mapped_column(Integer, index=True)
    tenant: Mapped[str] = mapped_column(String(128), default="default", index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_model: Mapped[str | None] = mapped_column(String(260), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class JobEvent(Base):
    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class JobControl(Base):
    """Per-job runner bookkeeping: requested control state, process identity, checkpoint, result."""

    __tablename__ = "job_control"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    requested: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(String(128), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid_started: Mapped[float | None] = mapped_column(Float, nullable=True)  # guards against pid reuse
    checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class RequestLog(Base):
    __tablename__ = "request_log"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), default="default", index=True)
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    route: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(260), index=True)
    adapter: Mapped[str | None] = mapped_column(String(260), nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(default=0.0)
    ttft_ms: Mapped[float | None] = mapped_column(nullable=True)
    prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    output: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    # a grounded answer's passages: [{"document", "chunk", "chunk_id", "score"}] (always kept: feedback names them)
    citations: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("request_id", "tenant", name="uq_feedback_request"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("request_log.id"), index=True)
    tenant: Mapped[str] = mapped_column(String(128), default="default", index=True)
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)
    correction: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), default="default", index=True)
    name: Mapped[str] = mapped_column(String(128))
    hash: Mapped[str] = mapped_column(String(128), unique=True)
    scopes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    rate_limit: Mapped[float | None] = mapped_column(nullable=True)
    token_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    tenant: Mapped[str] = mapped_column(String(128), default="default")
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(260), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LoopPolicy(Base):
    """The feedback loop of one served model name: its settings and where its current round stands.

    ``state`` is idle / training / gating / canary (``job_id``: the round's train job, then its gate's
    evaluate job); ``canary`` holds the live split (candidate, share, salt) so a
    restarted daemon routes the same request ids the same way.
    """

    __tablename__ = "loop_policies"
    tenant: Mapped[str] = mapped_column(String(128), primary_key=True, default="default", index=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="idle")
    root_dataset: Mapped[str | None] = mapped_column(String(160), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    candidate: Mapped[str | None] = mapped_column(String(260), nullable=True)
    baseline: Mapped[str | None] = mapped_column(String(71), nullable=True)  # serving digest when the round began
    feedback_cutoff: Mapped[int] = mapped_column(Integer, default=0)  # feedback ids up to here are used
    round_cutoff: Mapped[int] = mapped_column(Integer, default=0)  # the last feedback id in the running round
    canary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class StoredFile(Base):
    """An uploaded file (OpenAI's files API): its bytes are a blob (``digest``), this row says whose it is.

    Two uploads of the same bytes share one blob; each is its own row with its own id and tenant.
    """

    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "file-<hex>"
    tenant: Mapped[str] = mapped_column(String(128), default="default", index=True)
    filename: Mapped[str] = mapped_column(String(260))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(Integer)
    lines: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(71))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class FineTuneRequest(Base):
    """What a fine-tuning job was asked in OpenAI's shape (files, suffix, metadata...), beside its ``train`` job."""

    __tablename__ = "fine_tuning_jobs"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), default="default", index=True)
    model: Mapped[str] = mapped_column(String(260))
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result_name: Mapped[str] = mapped_column(String(260))
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # suffix, seed, metadata, hyperparameters
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class KnowledgeBase(Base):
    """A tenant's knowledge base: its embedding model, chunking settings and newest version.

    ``embed_digest`` is the manifest digest of the embedding model the stored vectors came from; when
    the model's name now resolves to another manifest, the chunks are embedded again (a new version).
    """

    __tablename__ = "knowledge_bases"
    __table_args__ = (UniqueConstraint("tenant", "name", name="uq_knowledge_bases_tenant_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(128), default="default", index=True)
    name: Mapped[str] = mapped_column(String(128))
    embed_model: Mapped[str] = mapped_column(String(260))
    embed_digest: Mapped[str | None] = mapped_column(String(71), nullable=True)
    chunk_size: Mapped[int] = mapped_column(Integer)
    overlap: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class KbVersion(Base):
    """One version of a knowledge base: what made it (create, add, reembed) and its report."""

    __tablename__ = "kb_versions"
    __table_args__ = (UniqueConstraint("kb_id", "version", name="uq_kb_versions_kb_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    operation: Mapped[str] = mapped_column(String(16))
    embed_digest: Mapped[str | None] = mapped_column(String(71), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # documents added, failures, counts
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class KbDocument(Base):
    """A document of a knowledge base: its extracted text is a blob (``digest``); ``source_digest`` is
    the sha256 of the bytes it came from (the same bytes added again are skipped)."""

    __tablename__ = "kb_documents"
    __table_args__ = (UniqueConstraint("kb_id", "name", name="uq_kb_documents_kb_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(260))
    kind: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(71))
    source_digest: Mapped[str] = mapped_column(String(71))
    chars: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)  # the knowledge-base version that added it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class KbChunk(Base):
    """A chunk of a document: its text (``digest`` = its sha256), where it sits, and its embedding
    (float32 bytes, unit length) under the model ``embed_digest`` names."""

    __tablename__ = "kb_chunks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kb_id: Mapped[int] = mapped_column(ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("kb_documents.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(71))
    text: Mapped[str] = mapped_column(Text)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    embed_digest: Mapped[str | None] = mapped_column(String(71), nullable=True)
