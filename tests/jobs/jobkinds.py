"""Job kinds for the job tests; they run inside real runner processes (``llmos.jobs.process``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from llmos.jobs.context import JobContext

RELEASE = "release"  # a file in the job's work folder


def count(ctx: JobContext, spec: dict[str, Any]) -> dict[str, Any]:
    """Count to ``n``, ``delay`` seconds a step; every executed step is appended to ``work/steps.log``.

    The counter is checkpointed (write-then-rename) at pause points that ask for it and every
    ``checkpoint_every`` steps; a resumed run continues after the checkpointed step. ``fail_at``
    raises at that step. ``hold_after`` keeps the job at that step (still passing pause points) until
    the test calls ``release``: a job the test means to pause, kill or cancel cannot finish first.
    """
    n, delay = int(spec["n"]), float(spec.get("delay", 0.02))
    every, fail_at = int(spec.get("checkpoint_every", 0)), spec.get("fail_at")
    hold_after = spec.get("hold_after")
    state_file = ctx.checkpoint_dir / "counter.json"
    steps_log = ctx.work_dir / "steps.log"
    start = json.loads(Path(ctx.resume_from).read_text())["i"] if ctx.resume_from else 0
    i = start
    ctx.log(f"counting from {start} to {n}")

    def save() -> Path:
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"i": i}))
        tmp.replace(state_file)
        return state_file

    while i < n:
        time.sleep(delay)
        i += 1
        with steps_log.open("a") as f:
            f.write(f"{i}\n")
        if fail_at == i:
            raise ValueError(f"boom at step {i}")
        ctx.progress(i, n, loss=1.0 / i, metric=i / n)
        if every and i % every == 0:
            ctx.save_checkpoint(save)
        ctx.pause_point(save)
        while i == hold_after and not (ctx.work_dir / RELEASE).exists():
            time.sleep(delay)
            ctx.pause_point(save)
    ctx.event("done", count=i)
    return {"count": i, "started_at": start, "attempt": ctx.attempt}


def release(work_dir: Path) -> None:
    """Let a ``count`` job held at ``hold_after`` go on (this attempt and any later one)."""
    (work_dir / RELEASE).touch()


def stubborn(ctx: JobContext, spec: dict[str, Any]) -> None:
    """Never reaches a pause point: only a kill stops it."""
    ctx.log("sleeping without pause points")
    time.sleep(float(spec.get("seconds", 60)))


def steps_done(work_dir: Path) -> list[int]:
    path = work_dir / "steps.log"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def cpu_policy(ctx: JobContext, spec: dict[str, Any]) -> dict[str, Any]:
    """The OS scheduling policy and nice value of every thread of this runner, torch's pool started."""
    import os

    import torch

    torch.ones(256, 256) @ torch.ones(256, 256)  # intra-op threads exist from here on
    tids = [int(t) for t in os.listdir("/proc/self/task")]
    return {"policies": sorted({os.sched_getscheduler(t) for t in tids}), "nice": os.nice(0),
            "threads": len(tids), "torch_threads": torch.get_num_threads()}


def db_writer(ctx: JobContext, spec: dict[str, Any]) -> None:
    """Write transactions that hold SQLite's write lock for ``hold`` seconds each, until cancelled."""
    from llmos.db.tables import JobEvent

    db, hold, i = ctx._store.db, float(spec.get("hold", 0.005)), 0  # noqa: SLF001 - the runner's own database
    while True:
        with db.session() as s:
            s.add(JobEvent(job_id=ctx.job_id, kind="tick", data={"i": i}))
            s.flush()  # the INSERT runs now: the write lock is held from here to the commit
            time.sleep(hold)
        i += 1
        ctx.pause_point()
