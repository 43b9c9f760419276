"""Waiting in tests: for a state, never for a duration.

``wait_until(cond, what)`` polls ``cond`` until it returns something truthy and returns that. Given
``job=(jobs, job_id)`` it fails at once, naming the job's state, error and the end of its log, when the
job ends while ``cond`` is still false: a job that failed is reported as such, not as a timeout.
``ended`` does the same for anything else that can end (a process, a thread, a job seen over HTTP): a
callable that returns None while it may still happen, else why it never will. ``wait_for_job`` waits
for a job to reach one of some states the same way.

``BACKSTOP_S`` is a hang guard, not a timing claim: no test asserts how long something took (speed
is measured in bench/), so the backstop is generous enough for the busiest machine the suite runs on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    from llmos.jobs import JobInfo, JobRunner, JobState

T = TypeVar("T")
BACKSTOP_S = 600.0
POLL_S = 0.02
LOG_TAIL = 3000


def wait_until(cond: Callable[[], T], what: str, *, job: tuple[JobRunner, str] | None = None,
               ended: Callable[[], str | None] | None = None, timeout: float = BACKSTOP_S,
               interval: float = POLL_S) -> T:
    """Poll ``cond`` until it is truthy; returns its value. Fails at once when ``job`` (or ``ended``) has ended."""
    if job is not None:
        ended = lambda: job_ended(*job)  # noqa: E731
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        why = ended() if ended is not None else None
        if why is not None:
            value = cond()  # the job may have met the condition on its way out
            if value:
                return value
            pytest.fail(f"while waiting for {what}: {why}", pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still not so after {timeout:.0f} s (a hang guard, not a timing claim)",
                        pytrace=False)
        time.sleep(interval)


def wait_for_job(jobs: JobRunner, job_id: str, *states: JobState, timeout: float = BACKSTOP_S) -> JobInfo:
    """The job's info once it is in one of ``states`` (default: any final state). A job that ends in
    another final state fails the test at once, with its error and log."""
    from llmos.jobs import JobState

    wanted = set(states) or {s for s in JobState if s.final}
    names = " or ".join(sorted(s.api for s in wanted))

    def reached() -> JobInfo | None:
        info = jobs.get(job_id)
        return info if info.state in wanted else None

    return wait_until(reached, f"job {job_id} to be {names}", job=(jobs, job_id), timeout=timeout)


def job_ended(jobs: JobRunner, job_id: str) -> str | None:
    """None while the job may still change; once it is final, what became of it."""
    info = jobs.get(job_id)
    if not info.state.final:
        return None
    error = f"; error: {info.error}" if info.error else ""
    return (f"job {job_id} ({info.kind}) has {info.state.api}{error}\n--- end of its log ---\n"
            f"{jobs.logs(job_id)[-LOG_TAIL:]}")
