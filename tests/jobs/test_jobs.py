"""JobRunner with real runner processes: progress, pause/resume, cancel, crashes, daemon restarts."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from llmos.errors import Conflict, InvalidInput, NotFound
from llmos.jobs.freeze import is_stopped
from llmos.jobs import JobInfo, JobRunner, JobState, register_job_kind
from llmos.jobs.procs import RunnerProcess, Spawn, spawn_runner
from llmos.runtime import Runtime, open_runtime
from tests.conftest import make_settings
from tests.jobs.jobkinds import steps_done

FAST = {"job_progress_interval": 0.0, "job_poll_interval": 0.05, "job_stop_timeout": 5.0}
MakeRunner = Callable[..., JobRunner]


@pytest.fixture(autouse=True)
def kinds() -> None:
    register_job_kind("count", "tests.jobs.jobkinds:count", replace=True)
    register_job_kind("stubborn", "tests.jobs.jobkinds:stubborn", replace=True)
    register_job_kind("cpu_policy", "tests.jobs.jobkinds:cpu_policy", replace=True)
    register_job_kind("db_writer", "tests.jobs.jobkinds:db_writer", replace=True)


@pytest.fixture
def make_runner(tmp_path: Path) -> Iterator[MakeRunner]:
    """JobRunners over ONE home (a second one plays the restarted daemon); every runner process is
    killed at the end, whoever started it."""
    made: list[tuple[JobRunner, Runtime]] = []

    def build(start: bool = True, spawn: Spawn = spawn_runner, **overrides: object) -> JobRunner:
        rt = open_runtime(make_settings(tmp_path / "home", **{**FAST, **overrides}), builtins=False)
        runner = JobRunner(rt, spawn=spawn)
        made.append((runner, rt))
        if start:
            runner.startup()
        return runner

    yield build
    for runner, rt in made:
        crash(runner)
        for info in runner.list():
            if info.pid and psutil.pid_exists(info.pid):
                os.kill(info.pid, signal.SIGKILL)
        rt.close()


@pytest.fixture
def jobs(make_runner: MakeRunner) -> JobRunner:
    return make_runner()


def crash(runner: JobRunner) -> None:
    """The daemon dies: its supervisor stops without pausing anything (its runners live on)."""
    runner._stopping.set()  # noqa: SLF001 - simulating a crash needs the insides
    if runner._thread is not None:  # noqa: SLF001
        runner._thread.join()  # noqa: SLF001


def wait_until(cond: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def work_dir(jobs: JobRunner, job_id: str) -> Path:
    return jobs.settings.jobs_dir / job_id / "work"


def at_step(jobs: JobRunner, job_id: str, step: int) -> Callable[[], bool]:
    return lambda: jobs.get(job_id).progress.step >= step


def test_progress_events_arrive_in_order_and_the_job_succeeds(jobs: JobRunner) -> None:
    job_id = jobs.submit("count", {"n": 12, "delay": 0.01})
    info = jobs.wait(job_id, timeout=30)
    assert info.state == JobState.SUCCEEDED, info.error
    assert info.result == {"count": 12, "started_at": 0, "attempt": 1}
    assert info.progress.step == 12 and info.progress.total == 12 and info.progress.eta_s == 0.0
    assert info.progress.metrics == {"loss": pytest.approx(1 / 12), "metric": 1.0}
    events = jobs.events(job_id)
    steps = [e.data["step"] for e in events if e.kind == "progress"]
    assert steps == list(range(1, 13))
    assert [e.data["state"] for e in events if e.kind == "state"] == ["queued", "running", "succeeded"]
    assert [e.kind for e in events][-2:] == ["done", "state"]
    assert [e.id for e in jobs.events(job_id, since=events[-3].id)] == [e.id for e in events[-2:]]
    assert "counting from 0 to 12" in jobs.logs(job_id)
    wait_until(lambda: jobs.get(job_id).pid is None)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
@pytest.mark.parametrize(("priority", "policy", "nice"), [("idle", getattr(os, "SCHED_IDLE", 5), 0),
                                                          ("low", os.SCHED_OTHER, 19), ("normal", os.SCHED_OTHER, None)])
def test_runners_run_below_interactive_work_on_every_thread(make_runner: MakeRunner, priority: str,
                                                            policy: int, nice: int | None) -> None:
    jobs = make_runner(job_cpu_priority=priority, job_threads=2)
    info = jobs.wait(jobs.submit("cpu_policy", {}), timeout=60)
    assert info.state == JobState.SUCCEEDED, info.error
    assert info.result["policies"] == [policy] and info.result["torch_threads"] == 2
    assert info.result["threads"] > 1  # the check saw more than the main thread
    if policy == os.SCHED_OTHER:  # "normal" keeps the daemon's nice value
        assert info.result["nice"] == (os.nice(0) if nice is None else nice)


def test_a_frozen_runner_never_holds_the_database(make_runner: MakeRunner) -> None:
    """Freeze, 20 times, a runner that spends most of its time inside write transactions: each freeze
    lands between two of them, so the daemon's writes go through while it is stopped (a runner stopped
    holding the write lock would make them wait 30 s and fail)."""
    jobs = make_runner()
    job_id = jobs.submit("db_writer", {"hold": 0.005})
    wait_until(lambda: len(jobs.events(job_id, kinds=["tick"], limit=20)) >= 20)
    pid = jobs.get(job_id).pid
    assert pid is not None
    frozen = 0
    for i in range(20):
        if not jobs.freeze_all("test"):
            continue  # it kept its lock longer than a freeze waits: the next try gets it
        frozen += 1
        assert is_stopped(pid) and jobs.get(job_id).state == JobState.PAUSED
        started = time.monotonic()
        jobs.store.add_event(job_id, "probe", {"i": i})
        assert time.monotonic() - started < 5.0
        ticks = len(jobs.events(job_id, kinds=["tick"], limit=100_000))
        time.sleep(0.05)
        assert len(jobs.events(job_id, kinds=["tick"], limit=100_000)) == ticks  # stopped: not one more
        assert jobs.thaw_all("test") == [job_id] and not is_stopped(pid)
        time.sleep(0.01)
    assert frozen >= 18 and jobs.get(job_id).state == JobState.RUNNING
    jobs.cancel(job_id)
    assert jobs.wait(job_id, timeout=20).state == JobState.CANCELLED


def test_progress_rows_are_throttled_but_the_last_is_kept(make_runner: MakeRunner) -> None:
    jobs = make_runner(job_progress_interval=10.0)
    job_id = jobs.submit("count", {"n": 15, "delay": 0.01})
    assert jobs.wait(job_id, timeout=30).state == JobState.SUCCEEDED
    steps = [e.data["step"] for e in jobs.events(job_id) if e.kind == "progress"]
    assert steps == [1, 15]


def test_pause_takes_effect_fast_and_resume_loses_no_step(jobs: JobRunner) -> None:
    job_id = jobs.submit("count", {"n": 30, "delay": 0.05})
    wait_until(at_step(jobs, job_id, 3))
    asked = time.monotonic()
    jobs.pause(job_id)
    paused = jobs.wait(job_id, [JobState.PAUSED], timeout=5)
    assert time.monotonic() - asked < 0.5
    assert paused.pid is not None and psutil.pid_exists(paused.pid)  # in place: the runner waits
    done = steps_done(work_dir(jobs, job_id))
    time.sleep(0.4)
    assert steps_done(work_dir(jobs, job_id)) == done  # nothing runs while paused
    assert jobs.get(job_id).progress.step == paused.progress.step == done[-1]
    jobs.resume(job_id)
    info = jobs.wait(job_id, timeout=30)
    assert info.state == JobState.SUCCEEDED and info.result == {"count": 30, "started_at": 0, "attempt": 1}
    assert steps_done(work_dir(jobs, job_id)) == list(range(1, 31))
    states = [e.data["state"] for e in jobs.events(job_id) if e.kind == "state"]
    assert states == ["queued", "running", "paused", "running", "succeeded"]


def test_pause_freeing_memory_exits_and_resume_restarts_from_the_checkpoint(jobs: JobRunner) -> None:
    job_id = jobs.submit("count", {"n": 25, "delay": 0.03})
    wait_until(at_step(jobs, job_id, 4))
    pid = jobs.get(job_id).pid
    assert pid is not None
    jobs.pause(job_id, free_memory=True)
    wait_until(lambda: jobs.get(job_id).pid is None)
    paused = jobs.get(job_id)
    assert paused.state == JobState.PAUSED and not psutil.pid_exists(pid)  # reaped: the runner is gone
    assert paused.checkpoint and Path(paused.checkpoint).exists()
    step = paused.progress.step
    assert jobs.live() == []  # the slot is free
    jobs.resume(job_id)
    info = jobs.wait(job_id, timeout=30)
    assert info.state == JobState.SUCCEEDED, info.error
    assert info.result == {"count": 25, "started_at": step, "attempt": 2} and info.attempts == 2
    assert steps_done(work_dir(jobs, job_id)) == list(range(1, 26))  # none lost, none repeated
    assert f"resume from {paused.checkpoint}" in jobs.logs(job_id)


def test_resume_while_a_freeing_pause_is_under_way_still_runs_every_step(jobs: JobRunner) -> None:
    job_id = jobs.submit("count", {"n": 20, "delay": 0.02})
    wait_until(at_step(jobs, job_id, 3))
    jobs.pause(job_id, free_memory=True)
    jobs.wait(job_id, [JobState.PAUSED], timeout=5)
    jobs.resume(job_id)  # the runner may still be on its way out: it is requeued once it has left
    info = jobs.wait(job_id, timeout=30)
    assert info.state == JobState.SUCCEEDED and info.attempts == 2
    assert steps_done(work_dir(jobs, job_id)) == list(range(1, 21))


def test_cancel_a_running_and_a_queued_job(jobs: JobRunner) -> None:
    running = jobs.submit("count", {"n": 500, "delay": 0.02})
    queued = jobs.submit("count", {"n": 5})
    wait_until(at_step(jobs, running, 2))
    assert jobs.get(queued).state == JobState.QUEUED  # max_jobs = 1
    assert jobs.cancel(queued).state == JobState.CANCELLED
    jobs.cancel(running)
    info = jobs.wait(running, timeout=5)
    assert info.state == JobState.CANCELLED and info.progress.step < 500
    wait_until(lambda: jobs.get(running).pid is None)
    with pytest.raises(Conflict, match="already cancelled"):
        jobs.cancel(running)
    with pytest.raises(Conflict):
        jobs.resume(queued)


def test_cancel_kills_a_runner_that_reaches_no_pause_point(make_runner: MakeRunner) -> None:
    jobs = make_runner(job_stop_timeout=0.5)
    job_id = jobs.submit("stubborn", {"seconds": 60})
    wait_until(lambda: "sleeping without pause points" in jobs.logs(job_id))
    jobs.cancel(job_id)
    info = jobs.wait(job_id, timeout=5)
    assert info.state == JobState.CANCELLED
    runner_note = [e.data for e in jobs.events(job_id) if e.kind == "state"][-1]["runner"]
    assert "signal 9" in runner_note


def test_an_exception_fails_the_job_with_its_traceback(jobs: JobRunner) -> None:
    job_id = jobs.submit("count", {"n": 10, "fail_at": 3, "delay": 0.01})
    info = jobs.wait(job_id, timeout=30)
    assert info.state == JobState.FAILED
    assert "Traceback" in info.error and "ValueError: boom at step 3" in info.error
    assert "jobkinds.py" in info.error
    assert "ValueError: boom at step 3" in jobs.logs(job_id)
    assert [e.data for e in jobs.events(job_id) if e.kind == "state"][-1]["error"] == "ValueError: boom at step 3"


def test_kill_9_of_the_runner_fails_the_job(jobs: JobRunner) -> None:
    job_id = jobs.submit("count", {"n": 500, "delay": 0.02})
    wait_until(at_step(jobs, job_id, 2))
    os.kill(jobs.get(job_id).pid, signal.SIGKILL)
    info = jobs.wait(job_id, timeout=5)
    assert info.state == JobState.FAILED
    assert info.error.startswith("runner killed by signal 9 (SIGKILL)")
    assert "counting from 0 to 500" in info.error  # the end of the runner log comes with it
    wait_until(lambda: jobs.get(job_id).pid is None)


def test_a_restarted_daemon_resumes_a_killed_runner_from_its_last_checkpoint(make_runner: MakeRunner) -> None:
    first = make_runner()
    job_id = first.submit("count", {"n": 40, "delay": 0.02, "checkpoint_every": 5})
    wait_until(at_step(first, job_id, 12))
    crash(first)
    os.kill(first.get(job_id).pid, signal.SIGKILL)  # the runner dies while no daemon watches
    time.sleep(0.1)
    second = make_runner()
    info = second.wait(job_id, timeout=30)
    assert info.state == JobState.SUCCEEDED, info.error
    resumed_at = info.result["started_at"]
    assert resumed_at >= 10 and resumed_at % 5 == 0 and info.attempts == 2
    steps = steps_done(work_dir(second, job_id))
    assert steps[-(40 - resumed_at):] == list(range(resumed_at + 1, 41))
    assert "recovered" in [e.data.get("reason") for e in second.events(job_id) if e.kind == "state"]


def test_a_restarted_daemon_adopts_a_runner_that_outlived_it(make_runner: MakeRunner) -> None:
    first = make_runner()
    job_id = first.submit("count", {"n": 30, "delay": 0.03})
    wait_until(at_step(first, job_id, 2))
    crash(first)
    second = make_runner()
    assert second.live() == [job_id]
    info = second.wait(job_id, timeout=30)
    assert info.state == JobState.SUCCEEDED and info.attempts == 1
    wait_until(lambda: second.get(job_id).pid is None)  # the adopted runner's exit was noticed


def test_a_daemon_that_dies_with_a_runner_frozen_leaves_it_to_the_next_one(make_runner: MakeRunner) -> None:
    first = make_runner()
    job_id = first.submit("count", {"n": 30, "delay": 0.03})
    wait_until(at_step(first, job_id, 2))
    assert first.freeze_all("interactive load") == [job_id]
    pid = first.get(job_id).pid
    assert pid is not None and is_stopped(pid)
    crash(first)  # no thaw: the runner stays stopped until a daemon continues it
    second = make_runner()
    assert second.live() == [job_id] and not is_stopped(pid) and second.get(job_id).state == JobState.RUNNING
    info = second.wait(job_id, timeout=30)
    assert info.state == JobState.SUCCEEDED and info.attempts == 1
    assert steps_done(work_dir(second, job_id)) == list(range(1, 31))


def test_shutdown_thaws_frozen_runners_so_they_checkpoint_and_leave(make_runner: MakeRunner) -> None:
    first = make_runner()
    job_id = first.submit("count", {"n": 300, "delay": 0.03})
    wait_until(at_step(first, job_id, 2))
    assert first.freeze_all("interactive load") == [job_id]
    first.shutdown()
    info = first.get(job_id)
    assert (info.state, info.reason, info.pid) == (JobState.PAUSED, "shutdown", None)
    second = make_runner()
    assert second.wait(job_id, timeout=60).state == JobState.SUCCEEDED
    assert steps_done(work_dir(second, job_id)) == list(range(1, 301))


def test_shutdown_pauses_with_a_checkpoint_and_the_next_daemon_resumes(make_runner: MakeRunner) -> None:
    first = make_runner(max_jobs=2)
    job_id = first.submit("count", {"n": 30, "delay": 0.03})
    held = first.submit("count", {"n": 30, "delay": 0.03})
    wait_until(at_step(first, held, 3))
    first.pause(held)  # in place; a person's pause outlives the restart
    first.wait(held, [JobState.PAUSED], timeout=5)
    wait_until(at_step(first, job_id, 4))
    first.shutdown()
    info, kept = first.get(job_id), first.get(held)
    assert (info.state, info.reason, info.pid) == (JobState.PAUSED, "shutdown", None)
    assert (kept.state, kept.reason, kept.pid) == (JobState.PAUSED, "user", None)
    assert info.checkpoint is not None and kept.checkpoint is not None
    second = make_runner()
    done = second.wait(job_id, timeout=30)
    assert done.state == JobState.SUCCEEDED and done.result["started_at"] == info.progress.step
    assert steps_done(work_dir(second, job_id)) == list(range(1, 31))
    assert second.get(held).state == JobState.PAUSED
    second.resume(held)
    assert second.wait(held, timeout=30).result["started_at"] == kept.progress.step
    assert steps_done(work_dir(second, held)) == list(range(1, 31))


def test_jobs_start_one_at_a_time_and_pause_all_holds_the_queue(jobs: JobRunner) -> None:
    first = jobs.submit("count", {"n": 20, "delay": 0.03})
    second = jobs.submit("count", {"n": 3, "delay": 0.01})
    mine = jobs.submit("count", {"n": 3, "delay": 0.01})
    jobs.pause(mine)
    wait_until(at_step(jobs, first, 2))
    assert jobs.pause_all("interactive") == [first]
    assert jobs.wait(first, [JobState.PAUSED], timeout=5).reason == "interactive"
    time.sleep(0.3)
    assert jobs.get(second).state == JobState.QUEUED  # the queue is held while interactive load lasts
    assert jobs.resume_all("interactive") == [first]
    a, b = jobs.wait(first, timeout=30), jobs.wait(second, timeout=30)
    assert a.state == b.state == JobState.SUCCEEDED
    assert b.started_at >= a.finished_at
    assert jobs.get(mine).state == JobState.PAUSED  # resume_all leaves a person's pause alone


def test_tenants_see_only_their_jobs_and_bad_kinds_are_named(make_runner: MakeRunner) -> None:
    jobs = make_runner(start=False)  # no supervisor: the jobs stay queued
    theirs = jobs.submit("count", {"n": 1}, tenant="acme")
    with pytest.raises(NotFound):
        jobs.get(theirs, tenant="other")
    for call in (jobs.events, jobs.logs, jobs.pause, jobs.resume, jobs.cancel):
        with pytest.raises(NotFound):
            call(theirs, "other")
    assert [j.id for j in jobs.list("acme")] == [theirs] and jobs.list("other") == []
    with pytest.raises(InvalidInput, match="unknown job kind 'nope'.*count"):
        jobs.submit("nope", {})
    assert isinstance(jobs.get(theirs, "acme"), JobInfo)


def test_start_launches_at_once_and_poll_records_the_exit(make_runner: MakeRunner) -> None:
    jobs = make_runner(start=False)  # no supervisor thread: the caller drives poll()
    job_id = jobs.submit("count", {"n": 3, "delay": 0.01})
    assert jobs.get(job_id).state == JobState.QUEUED
    assert jobs.start(job_id).pid is not None
    assert jobs.wait(job_id, timeout=30).state == JobState.SUCCEEDED
    wait_until(lambda: (jobs.poll(), jobs.live() == [])[1])
    assert jobs.get(job_id).pid is None
    with pytest.raises(Conflict):
        jobs.start(job_id)


def test_a_runner_that_cannot_start_fails_the_job(make_runner: MakeRunner) -> None:
    def broken(argv: list[str], log: Path) -> RunnerProcess:
        raise OSError("no such interpreter")

    jobs = make_runner(spawn=broken)
    job_id = jobs.submit("count", {"n": 3})
    info = jobs.get(job_id)
    assert info.state == JobState.FAILED and "cannot start the runner process: no such interpreter" in info.error
    with pytest.raises(InvalidInput, match="JSON"):
        jobs.submit("count", {"when": object()})
