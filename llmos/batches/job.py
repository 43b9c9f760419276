"""The ``batch`` job kind: the input's requests, one at a time, through the daemon's public routes.

Between two requests the runner passes a pause point (pause, cancel, shutdown); while interactive
requests run the co-scheduler freezes it, so at most the request in flight competes with them (at the
lowest queue priority). Each finished line goes to the journal before the next starts; a runner that
starts again (a resume, a recovered daemon) skips the lines the journal holds. At the end, or on a
cancel, the journal becomes the output file (2xx answers) and the error file (bad lines, other answers).
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from llmos.batches.calls import Answer, DaemonCalls
from llmos.batches.journal import Journal
from llmos.batches.lines import BadLine, BatchLine, read_lines
from llmos.batches.spec import FILES_EVENT, PHASE_EVENT, BatchFiles, BatchSpec, batch_id, output_file_id, parse_spec
from llmos.jobs.context import JobContext, JobStop
from llmos.jobs.types import JobState
from llmos.store.files import Files

JOURNAL = "journal.jsonl"


def batch_job(ctx: JobContext, spec: dict[str, Any]) -> BatchFiles:
    s = parse_spec(spec)
    lines = list(read_lines(ctx.store.blobs.open_verified(s.input_digest), s.endpoint))
    journal = Journal(ctx.work_dir / JOURNAL)
    calls = DaemonCalls(ctx.settings, s.key_id, lambda seconds: _wait(ctx, seconds))
    ctx.event(PHASE_EVENT, phase="in_progress", done=len(journal.done))
    if journal.done:
        ctx.log(f"resuming: {len(journal.done)} of {s.total} lines already done")
    try:
        _run(ctx, s, lines, journal, calls)
        ctx.event(PHASE_EVENT, phase="finalizing")
        return _finalize(ctx, s, journal)
    except JobStop as stop:
        if stop.state == JobState.CANCELLED:  # a cancelled batch still hands over what it finished
            _finalize(ctx, s, journal)
        raise
    finally:
        calls.close()
        journal.close()


def _run(ctx: JobContext, s: BatchSpec, lines: list[BatchLine | BadLine], journal: Journal,
         calls: DaemonCalls) -> None:
    for line in lines:
        if line.number in journal.done:
            continue
        ctx.pause_point()
        if isinstance(line, BadLine):
            journal.append(line.number, False, _bad_record(line))
        else:
            answer = calls.post(line.url, line.body)
            journal.append(line.number, 200 <= answer.status_code < 300, _record(line.custom_id, answer))
        c = journal.counts(s.total)
        ctx.progress(len(journal.done), s.total, completed=c.completed, failed=c.failed)


def _wait(ctx: JobContext, seconds: float) -> None:
    """Sleep ``seconds`` (a 429 / 503, a restarting daemon) in short slices, obeying pause points."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        ctx.pause_point()
        time.sleep(min(left, 0.05))


def _record(custom_id: str, answer: Answer) -> dict[str, Any]:
    error = None
    if not 200 <= answer.status_code < 300:
        err = answer.body.get("error") if isinstance(answer.body, dict) else None
        err = err if isinstance(err, dict) else {}
        error = {"code": err.get("code") or err.get("type") or str(answer.status_code),
                 "message": err.get("message") or f"the request answered {answer.status_code}"}
    return {"id": _request_id(), "custom_id": custom_id,
            "response": {"status_code": answer.status_code, "request_id": answer.request_id, "body": answer.body},
            "error": error}


def _bad_record(line: BadLine) -> dict[str, Any]:
    return {"id": _request_id(), "custom_id": line.custom_id, "response": None,
            "error": {"code": "invalid_request", "message": line.message, "line": line.number}}


def _request_id() -> str:
    return "batch_req_" + secrets.token_hex(12)


def _finalize(ctx: JobContext, s: BatchSpec, journal: Journal) -> BatchFiles:
    """The output and error files from the journal (stable ids: finalizing again makes no new files)."""
    outputs, errors = ctx.work_dir / "output.jsonl", ctx.work_dir / "errors.jsonl"
    n_out, n_err = _split(journal, outputs, errors)
    files = Files(ctx.jobs.db, ctx.store.blobs, ctx.settings.locks_dir, s.tenant)
    name = batch_id(ctx.job_id)
    result = BatchFiles(counts=journal.counts(s.total))
    if n_out:
        result.output_file_id = files.create_output(outputs, f"{name}_output.jsonl",
                                                    output_file_id(ctx.job_id, "output")).id
    if n_err:
        result.error_file_id = files.create_output(errors, f"{name}_error.jsonl",
                                                   output_file_id(ctx.job_id, "error")).id
    ctx.event(FILES_EVENT, **result.model_dump(mode="json"))
    return result


def _split(journal: Journal, outputs: Path, errors: Path) -> tuple[int, int]:
    counts = [0, 0]
    tmp_out, tmp_err = outputs.with_suffix(".tmp"), errors.with_suffix(".tmp")
    with open(tmp_out, "w", encoding="utf-8") as out, open(tmp_err, "w", encoding="utf-8") as err:
        for ok, record in journal.records():
            (out if ok else err).write(json.dumps(record, ensure_ascii=False) + "\n")
            counts[0 if ok else 1] += 1
    tmp_out.replace(outputs)
    tmp_err.replace(errors)
    return counts[0], counts[1]
