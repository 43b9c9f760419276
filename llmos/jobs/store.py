"""Job rows: the queries both the daemon and runner processes use, each write one transaction.

The ``jobs`` table holds what a job is; ``job_control`` (one row per job, created with it) holds the
kernel's bookkeeping of its runner: the pending control request, the pid, the last checkpoint, the
result. State changes are compare-and-set (``UPDATE ... WHERE state IN (...)``) because two
processes write them: the runner (paused, succeeded, ...) and the daemon (queued, cancelled, a crash).
The UPDATE is each transaction's first statement on purpose: in SQLite's WAL mode a transaction that
reads first and writes later fails outright (not after busy_timeout) if another process wrote between.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update

from llmos.db.engine import Database
from llmos.db.tables import Job, JobControl, JobEvent, utcnow
from llmos.errors import NotFound
from llmos.jobs.types import Control, JobEventInfo, JobInfo, JobProgress, JobState, sources_of


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reads -----------------------------------------------------------------------------------
    def get(self, job_id: str, tenant: str | None = None) -> JobInfo:
        """The job; NotFound also when it belongs to another tenant (ids are not secrets to probe)."""
        with self.db.session() as s:
            row = s.execute(_joined().where(Job.id == job_id)).first()
        if row is None or (tenant is not None and row[0].tenant != tenant):
            raise NotFound(f"job {job_id!r} not found")
        return _info(row[0], row[1])

    def list(self, tenant: str | None = None, states: Iterable[JobState] | None = None) -> list[JobInfo]:
        """Newest first."""
        q = _joined().order_by(Job.created_at.desc(), Job.id)
        if tenant is not None:
            q = q.where(Job.tenant == tenant)
        if states is not None:
            q = q.where(Job.state.in_([int(x) for x in states]))
        with self.db.session() as s:
            return [_info(job, ctl) for job, ctl in s.execute(q).all()]

    def oldest(self, state: JobState, limit: int) -> list[str]:
        with self.db.session() as s:
            q = select(Job.id).where(Job.state == int(state)).order_by(Job.created_at, Job.id).limit(limit)
            return list(s.scalars(q))

    def events(self, job_id: str, since: int = 0, limit: int = 1000,
               kinds: Iterable[str] | None = None) -> list[JobEventInfo]:
        q = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > since)
        if kinds is not None:
            q = q.where(JobEvent.kind.in_(list(kinds)))
        q = q.order_by(JobEvent.id).limit(limit)
        with self.db.session() as s:
            return [_event_info(e) for e in s.scalars(q)]

    def last_event(self, job_id: str, kind: str) -> JobEventInfo | None:
        """The newest event of one kind (one indexed read, however long the job's history)."""
        q = (select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == kind)
             .order_by(JobEvent.id.desc()).limit(1))
        with self.db.session() as s:
            e = s.scalars(q).first()
            return _event_info(e) if e else None

    def control(self, job_id: str) -> tuple[Control, str | None, int]:
        """(pending request, its reason, current attempt): what a runner polls (a primary-key read)."""
        with self.db.session() as s:
            row = s.execute(select(JobControl.requested, JobControl.reason, JobControl.attempts)
                            .where(JobControl.job_id == job_id)).first()
        return (Control(row[0]), row[1], row[2]) if row else (Control.NONE, None, 0)

    # -- writes (each one transaction) -------------------------------------------------------------
    def create(self, job_id: str, kind: str, spec: dict[str, Any], tenant: str) -> JobInfo:
        with self.db.session() as s:
            s.add(Job(id=job_id, kind=kind, state=int(JobState.QUEUED), tenant=tenant, spec=spec, progress={}))
            s.flush()  # the job row first: job_control and job_events reference it
            s.add(JobControl(job_id=job_id))
            s.add(JobEvent(job_id=job_id, kind="state", data={"state": JobState.QUEUED.api}))
        return self.get(job_id)

    def transition(self, job_id: str, to: JobState, *, sources: Iterable[JobState] | None = None,
                   data: dict[str, Any] | None = None, job: dict[str, Any] | None = None,
                   control: dict[str, Any] | None = None, attempt: int | None = None) -> bool:
        """Move to ``to`` if the job is in one of ``sources`` (default: every allowed predecessor).

        Returns False, writing nothing, when the job was elsewhere (someone else got there first).
        ``attempt`` (runners pass theirs) also requires the job to be on that attempt, so a runner
        that a newer attempt superseded can never change the job. ``job`` / ``control`` are further
        column values written in the same transaction; ``data`` goes into the "state" event.
        """
        allowed = sources_of(to) if sources is None else frozenset(sources) & sources_of(to)
        values: dict[str, Any] = {"state": int(to), **(job or {})}
        if to.final:
            values.setdefault("finished_at", utcnow())
        where = [Job.id == job_id, Job.state.in_([int(x) for x in allowed])]
        if attempt is not None:
            where.append(Job.id.in_(select(JobControl.job_id).where(JobControl.job_id == job_id,
                                                                    JobControl.attempts == attempt)))
        with self.db.session() as s:
            res = s.execute(update(Job).where(*where).values(**values)
                            .execution_options(synchronize_session=False))
            if res.rowcount == 0:
                return False
            if control:
                s.execute(update(JobControl).where(JobControl.job_id == job_id).values(**control))
            s.add(JobEvent(job_id=job_id, kind="state", data={"state": to.api, **(data or {})}))
        return True

    def launch(self, job_id: str) -> bool:
        """QUEUED -> RUNNING for a new runner attempt: count it, clear stale requests and pid."""
        return self.transition(job_id, JobState.RUNNING, sources=[JobState.QUEUED],
                               job={"started_at": func.coalesce(Job.started_at, utcnow()), "finished_at": None},
                               control={"attempts": JobControl.attempts + 1, "requested": 0, "reason": None,
                                        "pid": None, "pid_started": None})

    def request(self, job_id: str, control: Control, reason: str | None) -> None:
        """Record a control request for the runner to pick up (and an event saying who asked why)."""
        with self.db.session() as s:
            s.execute(update(JobControl).where(JobControl.job_id == job_id)
                      .values(requested=int(control), reason=reason))
            s.add(JobEvent(job_id=job_id, kind="control", data={"requested": control.api or "resume",
                                                                 "reason": reason}))

    def set_control(self, job_id: str, **values: Any) -> None:
        """Bookkeeping without an event: pid, pid_started, requested."""
        with self.db.session() as s:
            s.execute(update(JobControl).where(JobControl.job_id == job_id).values(**values))

    def add_event(self, job_id: str, kind: str, data: dict[str, Any], *, progress: JobProgress | None = None,
                  checkpoint: str | None = None) -> None:
        """One event row; a progress event also updates ``jobs.progress``, a checkpoint event the resume point."""
        with self.db.session() as s:
            s.add(JobEvent(job_id=job_id, kind=kind, data=data))
            if progress is not None:
                s.execute(update(Job).where(Job.id == job_id).values(progress=progress.to_dict())
                          .execution_options(synchronize_session=False))
            if checkpoint is not None:
                s.execute(update(JobControl).where(JobControl.job_id == job_id).values(checkpoint=checkpoint))


def _joined():  # type: ignore[no-untyped-def]
    return select(Job, JobControl).outerjoin(JobControl, JobControl.job_id == Job.id)


def _info(job: Job, ctl: JobControl | None) -> JobInfo:
    ctl = ctl or JobControl(job_id=job.id, requested=0, attempts=0)
    state = JobState(job.state)
    progress = JobProgress.from_dict(job.progress)
    if state.final:  # a job that ended (early stopping included) has nothing left to estimate
        progress.eta_s = None
    return JobInfo(
        id=job.id, kind=job.kind, state=state, tenant=job.tenant, spec=dict(job.spec or {}),
        progress=progress, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, error=job.error, result=ctl.result, result_model=job.result_model,
        requested=Control(ctl.requested or 0), reason=ctl.reason, checkpoint=ctl.checkpoint,
        pid=ctl.pid, pid_started=ctl.pid_started, attempts=ctl.attempts or 0)


def _event_info(e: JobEvent) -> JobEventInfo:
    return JobEventInfo(e.id, e.job_id, e.at, e.kind, dict(e.data or {}))
