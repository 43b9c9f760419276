"""JobRunner with real runner processes: progress, pause/resume, cancel, crashes, daemon restarts."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from llmos.errors import Conflict, InvalidInput, NotFound
from llmos.jobs import JobInfo, JobRunner, JobState, register_job_kind
from llmos.jobs.freeze import is_stopped
from llmos.jobs.procs import NODE_LOST_EXIT, RunnerProcess, Spawn, process_alive, spawn_runner
from llmos.runtime import Runtime, open_runtime
from tests.conftest import make_settings
from tests.jobs.jobkinds import release, steps_done
from tests.waiting import BACKSTOP_S, wait_for_job, wait_until

# A shutdown or cancel waits for runners only as long as they take to reach a pause point, so a long
# stop timeout costs nothing and a crowded machine cannot turn a slow pause point into a kill.
FAST = {"job_progress_interval": 0.0, "job_poll_interval": 0.05, "job_stop_timeout": BACKSTOP_S}
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


def work_dir(jobs: JobRunner, job_id: str) -> Path:
    return jobs.settings.jobs_dir / job_id / "work"


def reach_step(jobs: JobRunner, job_id: str, step: int) -> None:
    wait_until(lambda: jobs.get(job_id).progress.step >= step, f"job {job_id} at step {step}", job=(jobs, job_id))


def runner_gone(jobs: JobRunner, job_id: str) -> None:
    wait_until(lambda: jobs.get(job_id).pid is None, f"the runner of {job_id} reaped")


def freeze(jobs: JobRunner, job_id: str, reason: str) -> int:
    """Freeze the job's runner (retried: a freeze waits only briefly for a database session to end);
    returns its pid once the OS shows it stopped."""
    wait_until(lambda: jobs.freeze_all(reason) == [job_id], f"{job_id} frozen", job=(jobs, job_id))
    pid = jobs.get(job_id).pid
    assert pid is not None
    wait_until(lambda: is_stopped(pid), f"runner {pid} stopped")
    return pid


def test_progress_events_arrive_in_order_and_the_job_succeeds(jobs: JobRunner) -> None:
    job_id = jobs.submit("count", {"n": 12, "delay": 0.01})
    info = wait_for_job(jobs, job_id)
    assert info.state == JobState.SUCCEEDED, info.error
    assert info.result == {"count": 12, "started_at": 0, "attempt": 1}
    assert info.progress.step == 12 and info.progress.total == 12 and info.progress.eta_s is None
    assert info.progress.metrics == {"loss": pytest.approx(1 / 12), "metric": 1.0}
    events = jobs.events(job_id)
    steps = [e.data["step"] for e in events if e.kind == "progress"]
    assert steps == list(range(1, 13))
    assert [e.data["state"] for e in events if e.kind == "state"] == ["queued", "running", "succeeded"]
    assert [e.kind for e in events][-2:] == ["done", "state"]
    assert [e.id for e in jobs.events(job_id, since=events[-3].id)] == [e.id for e in events[-2:]]
    assert "counting from 0 to 12" in jobs.logs(job_id)
    runner_gone(jobs, job_id)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
@pytest.mark.parametrize(("priority", "policy", "nice"), [("idle", getattr(os, "SCHED_IDLE", 5), 0),
                                                          ("low", os.SCHED_OTHER, 5), ("normal", os.SCHED_OTHER, None)])
def test_runners_run_below_interactive_work_on_every_thread(make_runner: MakeRunner, priority: str,
                                                            policy: int, nice: int | None) -> None:
    jobs = make_runner(job_cpu_priority=priority, job_threads=2)
    info = wait_for_job(jobs, jobs.submit("cpu_policy", {}))
    assert info.state == JobState.SUCCEEDED, info.error
    assert info.result["policies"] == [policy] and info.result["torch_threads"] == 2
    assert info.result["threads"] > 1  # the check saw more than the main thread
    if policy == os.SCHED_OTHER:  # "normal" keeps the daemon's nice value
        assert info.result["nice"] == (os.nice(0) if nice is None else nice)


def test_a_frozen_runner_never_holds_the_database(make_runner: MakeRunner) -> None:
    """Freeze, 20 times, a runner that spends most of its time inside write transactions: each freeze
    lands between two of them, so the daemon's writes go through while it is stopped (a runner stopped
    holding the write lock would make them wait out SQLite's busy timeout and fail)."""
    jobs = make_runner()
    job_id = jobs.submit("db_writer", {"hold": 0.005})

    def ticks() -> int:
        return len(jobs.events(job_id, kinds=["tick"], limit=100_000))

    wait_until(lambda: ticks() >= 20, "twenty write transactions", job=(jobs, job_id))
    for i in range(20):
        pid = freeze(jobs, job_id, "test")
        assert jobs.get(job_id).state == JobState.PAUSED
        before = ticks()
        jobs.store.add_event(job_id, "probe", {"i": i})  # the daemon writes while the runner is stopped
        assert ticks() == before  # stopped: not one more
        assert jobs.thaw_all("test") == [job_id] and not is_stopped(pid)
        wait_until(lambda: ticks() > before, "a write after the thaw", job=(jobs, job_id))
    assert jobs.get(job_id).state == JobState.RUNNING
    jobs.cancel(job_id)
    assert wait_for_job(jobs, job_id).state == JobState.CANCELLED


def test_progress_rows_are_throttled_but_the_last_is_kept(make_runner: MakeRunner) -> None:
    jobs = make_runner(job_progress_interval=1e9)  # no interval passes within the job, however slow the machine
    job_id = jobs.submit("count", {"n": 15, "delay": 0.01})
    assert wait_for_job(jobs, job_id).state == JobState.SUCCEEDED
    steps = [e.data["step"] for e in jobs.events(job_id) if e.kind == "progress"]
    assert steps == [1, 15]


def test_pause_holds_the_runner_in_place_and_resume_loses_no_step(jobs: JobRunner) -> None:
    job_id = jobs.submit("count", {"n": 30, "delay": 0.02, "hold_after": 29})
    reach_step(jobs, job_id, 3)
    jobs.pause(job_id)
    paused = wait_for_job(jobs, job_id, JobState.PAUSED)
    assert paused.pid is not None and psutil.pid_exists(paused.pid)  # in place: the runner waits
    done = steps_done(work_dir(jobs, job_id))
    assert jobs.get(job_id).progress.step == paused.progress.step == done[-1]
    assert jobs.get(job_id).state == JobState.PAUSED and steps_done(work_dir(jobs, job_id)) == done  # nothing ran
    jobs.resume(job_id)
    release(work_dir(jobs, job_id))
    info = wait_for_job(jobs, job_id)
    assert info.state == JobState.SUCCEEDED and info.result == {"count": 30, "started_at": 0, "attempt": 1}
    assert steps_done(work_dir(jobs, job_id)) == list(range(1, 31))
    states = [e.data["state"] for e in jobs.events(job_id) if e.kind == "state"]
    assert states == ["queued", "running", "paused", "running", "succeeded"]


def test_pause_freeing_memory_exits_and_resume_restarts_from_the_checkpoint(jobs: JobRunner) -> None:
    job_id = jobs.submit("count", {"n": 25, "delay": 0.02, "hold_after": 24})
    reach_step(jobs, job_id, 4)
    pid = jobs.get(job_id).pid
    assert pid is not None
    jobs.pause(job_id, free_memory=True)
    wait_for_job(jobs, job_id, JobState.PAUSED)
    runner_gone(jobs, job_id)
    paused = jobs.get(job_id)
    assert paused.state == JobState.PAUSED and not psutil.pid_exists(pid)  # reaped: the runner is gone
    assert paused.checkpoint and Path(paused.checkpoint).exists()
    step = paused.progress.step
    assert jobs.live() == []  # the slot is free
    jobs.resume(job_id)
    release(work_dir(jobs, job_id))
    info = wait_for_job(jobs, job_id)
    assert info.state == JobState.SUCCEEDED, info.error
    assert info.result == {"count": 25, "started_at": step, "attempt": 2} and info.attempts == 2
    assert steps_done(work_dir(jobs, job_id)) == list(range(1, 26))  # none lost, none repeated
    assert f"resume from {paused.checkpoint}" in jobs.logs(job_id)


def test_resume_while_a_freeing_pause_is_under_way_still_runs_every_step(jobs: JobRunner) -> None:
    job_id = jobs.submit("count", {"n": 20, "delay": 0.02, "hold_after": 19})
    reach_step(jobs, job_id, 3)
    jobs.pause(job_id, free_memory=True)
    wait_for_job(jobs, job_id, JobState.PAUSED)
    jobs.resume(job_id)  # the runner may still be on its way out: it is requeued once it has left
    release(work_dir(jobs, job_id))
    info = wait_for_job(jobs, job_id)
    assert info.state == JobState.SUCCEEDED and info.attempts == 2
    assert steps_done(work_dir(jobs, job_id)) == list(range(1, 21))


def test_cancel_a_running_and_a_queued_job(jobs: JobRunner) -> None:
    running = jobs.submit("count", {"n": 10, "delay": 0.02, "hold_after": 2})
    queued = jobs.submit("count", {"n": 5})
    reach_step(jobs, running, 2)
    assert jobs.get(queued).state == JobState.QUEUED  # max_jobs = 1
    assert jobs.cancel(queued).state == JobState.CANCELLED
    jobs.cancel(running)
    info = wait_for_job(jobs, running)
    assert info.state == JobState.CANCELLED and info.progress.step < 10
    runner_gone(jobs, running)
    with pytest.raises(Conflict, match="already cancelled"):
        jobs.cancel(running)
    with pytest.raises(Conflict):
        jobs.resume(queued)


def test_cancel_kills_a_runner_that_reaches_no_pause_point(make_runner: MakeRunner) -> None:
    jobs = make_runner(job_stop_timeout=0.5)
    job_id = jobs.submit("stubborn", {"seconds": 600})
    wait_until(lambda: "sleeping without pause points" in jobs.logs(job_id), "the job asleep", job=(jobs, job_id))
    jobs.cancel(job_id)
    info = wait_for_job(jobs, job_id)
    assert info.state == JobState.CANCELLED
    runner_note = [e.data for e in jobs.events(job_id) if e.kind == "state"][-1]["runner"]
    assert "signal 9" in runner_note


def test_an_exception_fails_the_job_with_its_traceback(jobs: JobRunner) -> None:
    job_id = jobs.submit("count", {"n": 10, "fail_at": 3, "delay": 0.01})
    info = wait_for_job(jobs, job_id)
    assert info.state == JobState.FAILED
    assert "Traceback" in info.error and "ValueError: boom at step 3" in info.error
    assert "jobkinds.py" in info.error
    assert "ValueError: boom at step 3" in jobs.logs(job_id)
    assert [e.data for e in jobs.events(job_id) if e.kind == "state"][-1]["error"] == "ValueError: boom at step 3"


def test_kill_9_of_the_runner_fails_the_job(jobs: JobRunner) -> None:
    job_id = jobs.submit("count", {"n": 10, "delay": 0.02, "hold_after": 2})
    reach_step(jobs, job_id, 2)
    os.kill(jobs.get(job_id).pid, signal.SIGKILL)
    info = wait_for_job(jobs, job_id)
    assert info.state == JobState.FAILED
    assert info.error.startswith("runner killed by signal 9 (SIGKILL)")
    assert "counting from 0 to 10" in info.error  # the end of the runner log comes with it
    runner_gone(jobs, job_id)


class NodeRunner:
    """A real runner process whose exit reads as its cluster node lost once ``lose`` killed it: what
    the cluster's runner host reports when the node under a runner dies (``llmos.cluster.jobs``)."""

    def __init__(self, proc: RunnerProcess) -> None:
        self.proc, self.pid, self.lost = proc, proc.pid, False

    def poll(self) -> int | None:
        rc = self.proc.poll()
        return NODE_LOST_EXIT if rc is not None and self.lost else rc

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def lose(self) -> None:
        self.lost = True
        os.kill(self.pid, signal.SIGKILL)


def on_nodes(started: list[NodeRunner]) -> Spawn:
    def spawn(argv: list[str], log_path: Path) -> NodeRunner:
        started.append(NodeRunner(spawn_runner(argv, log_path)))
        return started[-1]

    return spawn


def test_a_runner_whose_node_is_lost_resumes_from_its_last_checkpoint(make_runner: MakeRunner) -> None:
    started: list[NodeRunner] = []
    jobs = make_runner(spawn=on_nodes(started))
    job_id = jobs.submit("count", {"n": 30, "delay": 0.02, "checkpoint_every": 5, "hold_after": 12})
    reach_step(jobs, job_id, 12)
    started[0].lose()
    wait_until(lambda: len(started) == 2, "a second runner started")
    release(work_dir(jobs, job_id))
    info = wait_for_job(jobs, job_id)
    assert info.state == JobState.SUCCEEDED, info.error
    assert (info.result["started_at"], info.attempts) == (10, 2)  # the checkpoint at step 10, not the start
    assert steps_done(work_dir(jobs, job_id))[-20:] == list(range(11, 31))
    requeued = [e.data for e in jobs.events(job_id) if e.kind == "state" and e.data.get("reason") == "node lost"]
    assert len(requeued) == 1 and requeued[0]["resume_from"].endswith("counter.json")


def test_a_job_that_loses_its_node_three_times_fails_saying_so(make_runner: MakeRunner) -> None:
    started: list[NodeRunner] = []
    jobs = make_runner(spawn=on_nodes(started))
    job_id = jobs.submit("count", {"n": 30, "delay": 0.02, "checkpoint_every": 5, "hold_after": 12})
    for attempt in range(1, 4):
        wait_until(lambda: len(started) == attempt and jobs.get(job_id).progress.step >= 12,
                   f"attempt {attempt} held at step 12", job=(jobs, job_id))
        started[-1].lose()
    info = wait_for_job(jobs, job_id)
    assert info.state == JobState.FAILED and info.attempts == 3
    assert info.error.startswith("the cluster node running it was lost (3 times")
    assert len(started) == 3  # not started a fourth time
    wait_until(lambda: job_id not in jobs._node_losses, "its node-loss count forgotten once it ended")  # noqa: SLF001


def test_a_restarted_daemon_resumes_a_killed_runner_from_its_last_checkpoint(make_runner: MakeRunner) -> None:
    first = make_runner()
    job_id = first.submit("count", {"n": 40, "delay": 0.02, "checkpoint_every": 5, "hold_after": 12})
    reach_step(first, job_id, 12)
    crash(first)
    pid = first.get(job_id).pid
    os.kill(pid, signal.SIGKILL)  # the runner dies while no daemon watches
    wait_until(lambda: not process_alive(pid, None), f"runner {pid} dead")
    release(work_dir(first, job_id))
    second = make_runner()
    info = wait_for_job(second, job_id)
    assert info.state == JobState.SUCCEEDED, info.error
    resumed_at = info.result["started_at"]
    assert resumed_at == 10 and info.attempts == 2  # the last checkpoint before the kill (every 5 steps)
    steps = steps_done(work_dir(second, job_id))
    assert steps[-(40 - resumed_at):] == list(range(resumed_at + 1, 41))
    assert "recovered" in [e.data.get("reason") for e in second.events(job_id) if e.kind == "state"]


def test_a_restarted_daemon_adopts_a_runner_that_outlived_it(make_runner: MakeRunner) -> None:
    first = make_runner()
    job_id = first.submit("count", {"n": 30, "delay": 0.02, "hold_after": 29})
    reach_step(first, job_id, 2)
    crash(first)
    second = make_runner()
    assert second.live() == [job_id]
    release(work_dir(second, job_id))
    info = wait_for_job(second, job_id)
    assert info.state == JobState.SUCCEEDED and info.attempts == 1
    runner_gone(second, job_id)  # the adopted runner's exit was noticed


def test_a_daemon_that_dies_with_a_runner_frozen_leaves_it_to_the_next_one(make_runner: MakeRunner) -> None:
    first = make_runner()
    job_id = first.submit("count", {"n": 30, "delay": 0.02, "hold_after": 29})
    reach_step(first, job_id, 2)
    pid = freeze(first, job_id, "interactive load")
    crash(first)  # no thaw: the runner stays stopped until a daemon continues it
    assert is_stopped(pid)
    second = make_runner()
    assert second.live() == [job_id] and not is_stopped(pid) and second.get(job_id).state == JobState.RUNNING
    release(work_dir(second, job_id))
    info = wait_for_job(second, job_id)
    assert info.state == JobState.SUCCEEDED and info.attempts == 1
    assert steps_done(work_dir(second, job_id)) == list(range(1, 31))


def test_shutdown_thaws_frozen_runners_so_they_checkpoint_and_leave(make_runner: MakeRunner) -> None:
    first = make_runner()
    job_id = first.submit("count", {"n": 30, "delay": 0.02, "hold_after": 29})
    reach_step(first, job_id, 2)
    freeze(first, job_id, "interactive load")
    first.shutdown()
    info = first.get(job_id)
    assert (info.state, info.reason, info.pid) == (JobState.PAUSED, "shutdown", None)
    release(work_dir(first, job_id))
    second = make_runner()
    assert wait_for_job(second, job_id).state == JobState.SUCCEEDED
    assert steps_done(work_dir(second, job_id)) == list(range(1, 31))


def test_shutdown_pauses_with_a_checkpoint_and_the_next_daemon_resumes(make_runner: MakeRunner) -> None:
    first = make_runner(max_jobs=2)
    job_id = first.submit("count", {"n": 30, "delay": 0.02, "hold_after": 29})
    held = first.submit("count", {"n": 30, "delay": 0.02, "hold_after": 29})
    reach_step(first, held, 3)
    first.pause(held)  # in place; a person's pause outlives the restart
    wait_for_job(first, held, JobState.PAUSED)
    reach_step(first, job_id, 4)
    first.shutdown()
    info, kept = first.get(job_id), first.get(held)
    assert (info.state, info.reason, info.pid) == (JobState.PAUSED, "shutdown", None)
    assert (kept.state, kept.reason, kept.pid) == (JobState.PAUSED, "user", None)
    assert info.checkpoint is not None and kept.checkpoint is not None
    for job in (job_id, held):
        release(work_dir(first, job))
    second = make_runner()
    done = wait_for_job(second, job_id)
    assert done.state == JobState.SUCCEEDED and done.result["started_at"] == info.progress.step
    assert steps_done(work_dir(second, job_id)) == list(range(1, 31))
    assert second.get(held).state == JobState.PAUSED
    second.resume(held)
    assert wait_for_job(second, held).result["started_at"] == kept.progress.step
    assert steps_done(work_dir(second, held)) == list(range(1, 31))


def test_jobs_start_one_at_a_time_and_pause_all_holds_the_queue(jobs: JobRunner) -> None:
    first = jobs.submit("count", {"n": 20, "delay": 0.02, "hold_after": 19})
    second = jobs.submit("count", {"n": 3, "delay": 0.01})
    mine = jobs.submit("count", {"n": 3, "delay": 0.01})
    jobs.pause(mine)
    reach_step(jobs, first, 2)
    assert jobs.pause_all("interactive", free_memory=True) == [first]
    assert wait_for_job(jobs, first, JobState.PAUSED).reason == "interactive"
    # live() takes the supervisor's lock: once it is empty, the pass that reaped the runner (and then
    # looked at the queue with its slot free) is over.
    wait_until(lambda: jobs.live() == [], "the paused runner gone")
    assert jobs.get(second).state == JobState.QUEUED  # the queue is held while interactive load lasts
    assert jobs.resume_all("interactive") == [first]
    release(work_dir(jobs, first))
    a, b = wait_for_job(jobs, first), wait_for_job(jobs, second)
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
    assert wait_for_job(jobs, job_id).state == JobState.SUCCEEDED
    wait_until(lambda: (jobs.poll(), jobs.live() == [])[1], "the exit recorded")
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
