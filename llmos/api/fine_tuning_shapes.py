"""OpenAI's fine-tuning objects made from llmos's jobs: ``fine_tuning.job``, ``fine_tuning.job.event``
and ``fine_tuning.job.checkpoint``, with the map from llmos's job states to OpenAI's statuses.

=================================  ====================================================================
llmos job                          OpenAI ``status``
=================================  ====================================================================
queued                             ``queued``
running, before the first step     ``validating_files`` (the runner re-checks the pinned dataset and
                                   encodes the rows; the files were read whole when the job was made)
running                            ``running``
paused by a person (``/pause``)    ``paused`` (not in OpenAI's list; ``/resume`` continues the job)
paused by the kernel               ``running`` while its runner lives (frozen or holding for traffic),
                                   ``queued`` when its runner exited and it waits to start again
succeeded / failed / cancelled     ``succeeded`` / ``failed`` / ``cancelled``
=================================  ====================================================================
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from llmos.jobs import JobEventInfo, JobInfo, JobState
from llmos.jobs.types import USER_REASON
from llmos.train.fine_tunes import FineTuneRecord, default_learning_rate

EVENT_PREFIX, CHECKPOINT_PREFIX = "ftevent-", "ftckpt-"


def status_of(info: JobInfo) -> str:
    if info.state is JobState.RUNNING:
        return "running" if info.progress.step > 0 or info.progress.total else "validating_files"
    if info.state is JobState.PAUSED:
        if info.reason == USER_REASON:
            return "paused"
        return "running" if info.pid is not None else "queued"
    return info.state.api


def job_object(record: FineTuneRecord, info: JobInfo) -> dict[str, Any]:
    """One ``fine_tuning.job``; llmos's own view of the job is under ``llmos``."""
    plan = info.spec.get("plan") or {}
    config, task = plan.get("config") or {}, plan.get("task")
    failed = info.state is JobState.FAILED
    return {
        "id": info.id, "object": "fine_tuning.job", "created_at": _ts(info.created_at),
        "finished_at": _ts(info.finished_at), "model": record.model, "organization_id": record.tenant,
        "status": status_of(info),
        "fine_tuned_model": record.result_name if info.state is JobState.SUCCEEDED else None,
        "training_file": record.training_file, "validation_file": record.validation_file,
        "hyperparameters": _hyperparameters(config, task),
        "method": {"type": "supervised", "supervised": {"hyperparameters": _hyperparameters(config, task)}},
        "seed": config.get("seed", record.seed), "suffix": record.request.get("suffix"),
        "metadata": record.metadata, "result_files": [], "trained_tokens": None, "integrations": [],
        "estimated_finish": _estimated_finish(info),
        "error": {"code": "job_failed", "message": info.error or "the job failed", "param": None} if failed else None,
        "llmos": {"job": info.id, "state": info.state.api, "task": task, "method": plan.get("method"),
                  "dataset": (plan.get("dataset") or {}).get("ref"), "progress": info.progress.to_dict(),
                  "result_model": info.result_model},
    }


def _hyperparameters(config: dict[str, Any], task: str | None) -> dict[str, Any]:
    rate, multiplier = config.get("learning_rate"), None
    if rate is not None and task is not None:
        multiplier = round(rate / default_learning_rate(task), 6)
    epochs = config.get("epochs")
    return {"n_epochs": int(epochs) if isinstance(epochs, float) and epochs.is_integer() else epochs,
            "batch_size": config.get("batch_size"), "learning_rate_multiplier": multiplier}


def _estimated_finish(info: JobInfo) -> int | None:
    if info.state is not JobState.RUNNING or info.progress.eta_s is None:
        return None
    return int(time.time() + info.progress.eta_s)


def event_object(event: JobEventInfo) -> dict[str, Any]:
    """One ``fine_tuning.job.event``: progress and validation are ``metrics``, the rest ``message``s."""
    message, level, kind, data = _describe(event)
    return {"id": f"{EVENT_PREFIX}{event.id}", "object": "fine_tuning.job.event", "created_at": _ts(event.at),
            "level": level, "message": message, "type": kind, "data": data}


def _describe(event: JobEventInfo) -> tuple[str, str, str, dict[str, Any]]:
    d = event.data
    if event.kind == "progress":
        m = d.get("metrics") or {}
        data = {"step": d.get("step"), "total_steps": d.get("total"), "train_loss": m.get("loss"), **m}
        loss = f": training loss={m['loss']:.4f}" if isinstance(m.get("loss"), (int, float)) else ""
        return f"Step {d.get('step')}/{d.get('total')}{loss}", "info", "metrics", data
    if event.kind == "eval":
        data = {"step": d.get("step"), "valid_loss": d.get("loss"), **d}
        return f"Validation at step {d.get('step')}: {_pairs(d, skip={'step', 'epoch'})}", "info", "metrics", data
    if event.kind == "state":
        state, why = d.get("state"), d.get("reason") or d.get("error")
        level = "error" if state == "failed" else "info"
        why = "at the user's request" if why == USER_REASON else why and f"({why})"
        return f"Job {state}" + (f" {why}" if why else ""), level, "message", d
    if event.kind == "checkpoint":
        return f"Checkpoint written at step {d.get('step')}", "info", "message", d
    if event.kind == "control":
        why = f" ({d['reason']})" if d.get("reason") else ""
        return f"{str(d.get('requested', 'control')).capitalize()} requested{why}", "info", "message", d
    if event.kind == "waiting":
        return f"Waiting to start: {d.get('reason')}", "warn", "message", d
    return f"{event.kind}: {_pairs(d)}", "info", "message", d


def checkpoint_objects(job_id: str, result_name: str, events: list[JobEventInfo]) -> list[dict[str, Any]]:
    """The job's checkpoints, oldest first, each with the last metrics reported before it."""
    out, train, valid = [], {}, {}
    for e in events:
        if e.kind == "progress":
            train = e.data.get("metrics") or {}
        elif e.kind == "eval":
            valid = e.data
        elif e.kind == "checkpoint":
            step = int(e.data.get("step") or 0)
            metrics = {"step": step, "train_loss": train.get("loss"), "valid_loss": valid.get("loss")}
            out.append({"id": f"{CHECKPOINT_PREFIX}{e.id}", "object": "fine_tuning.job.checkpoint",
                        "created_at": _ts(e.at), "fine_tuning_job_id": job_id, "step_number": step,
                        "fine_tuned_model_checkpoint": f"{result_name}:step-{step}", "metrics": metrics})
    return out


def cursor(value: str | None, prefix: str) -> int | None:
    """The event id inside an ``after`` cursor (``ftevent-12`` or ``12``); None when absent or not ours."""
    if value is None:
        return None
    digits = value.removeprefix(prefix)
    return int(digits) if digits.isdigit() and len(digits) <= 18 else None


def _pairs(data: dict[str, Any], skip: frozenset[str] | set[str] = frozenset()) -> str:
    parts = []
    for k, v in data.items():
        if k in skip:
            continue
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None
