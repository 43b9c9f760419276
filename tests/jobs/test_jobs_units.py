"""The job subsystem's pure parts, and JobContext's pause contract in-process (no runner process)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from llmos.errors import Conflict, InvalidInput
from llmos.jobs.context import ControlWatcher, EtaEstimator, JobContext, JobStop
from llmos.jobs.store import JobStore
from llmos.jobs.kinds import job_kind_entry, load_entry, register_job_kind, unregister_job_kind
from llmos.jobs.procs import UNKNOWN_EXIT, describe_exit, tail_text
from llmos.jobs.types import API_STATES, TRANSITIONS, Control, JobState, sources_of
from llmos.runtime import Runtime
from tests.kernel.conftest import FakeClock
from tests.waiting import BACKSTOP_S, wait_until


def test_every_state_has_an_api_name_and_only_final_states_are_dead_ends() -> None:
    assert set(API_STATES) == set(JobState) and len(set(API_STATES.values())) == len(JobState)
    for state in JobState:
        assert JobState.from_api(state.api) is state
        assert (TRANSITIONS[state] == frozenset()) == state.final
    assert sources_of(JobState.QUEUED) == {JobState.RUNNING, JobState.PAUSED}
    with pytest.raises(ValueError, match="known: queued"):
        JobState.from_api("done")


def test_control_requests_order_by_severity() -> None:
    assert Control.NONE < Control.PAUSE < Control.PAUSE_FREE < Control.CANCEL
    assert Control.NONE.api is None and Control.PAUSE_FREE.api == "pause_free"


def test_eta_comes_from_step_timing_and_ignores_paused_time(clock: FakeClock) -> None:
    eta = EtaEstimator(clock)
    assert eta.update(0, 10) == (None, None)
    for step in range(1, 4):
        clock.advance(2.0)
        remaining, rate = eta.update(step, 10)
    assert remaining == pytest.approx(14.0) and rate == pytest.approx(0.5)
    eta.rebase()
    clock.advance(500.0)  # paused
    eta.update(3, 10)
    clock.advance(2.0)
    assert eta.update(4, 10)[0] == pytest.approx(12.0)
    assert eta.update(4, None)[0] is None


def test_kind_registry_validates_and_refuses_silent_replacement() -> None:
    register_job_kind("unit-kind", "tests.jobs.jobkinds:count")
    register_job_kind("unit-kind", "tests.jobs.jobkinds:count")  # the same again is fine
    with pytest.raises(Conflict):
        register_job_kind("unit-kind", "tests.jobs.jobkinds:stubborn")
    register_job_kind("unit-kind", "tests.jobs.jobkinds:stubborn", replace=True)
    assert job_kind_entry("unit-kind").endswith(":stubborn")
    assert callable(load_entry(job_kind_entry("unit-kind")))
    unregister_job_kind("unit-kind")
    for name, entry in [("Bad Name", "a:b"), ("ok", "no-colon"), ("ok", "a.b:"), ("x" * 40, "a:b")]:
        with pytest.raises(InvalidInput):
            register_job_kind(name, entry)


def test_exits_are_described() -> None:
    assert describe_exit(-9) == "runner killed by signal 9 (SIGKILL)"
    assert describe_exit(3) == "runner exited with code 3"
    assert "without recording" in describe_exit(0)
    assert "unknown" in describe_exit(UNKNOWN_EXIT)


def test_log_tail_starts_at_a_line(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail_text(log, 20) == "line 98\nline 99\n"
    assert tail_text(log, 10_000).startswith("line 0\n")
    assert tail_text(tmp_path / "missing", 10) == ""


class Switch:
    """A control request the test flips; read by a real ControlWatcher, which the flip wakes."""

    def __init__(self) -> None:
        self.value: tuple[Control, str | None] = (Control.NONE, None)
        self.ctx: JobContext | None = None

    def __call__(self) -> tuple[Control, str | None]:
        return self.value

    def flip(self, control: Control, reason: str | None) -> None:
        """Request ``control`` and wait until the context has seen it."""
        assert self.ctx is not None
        ctx, self.value = self.ctx, (control, reason)
        ctx.wake()
        seen = {Control.NONE: (False, False), Control.PAUSE: (True, False), Control.PAUSE_FREE: (True, True),
                Control.CANCEL: (False, True)}[control]
        wait_until(lambda: (ctx.should_pause(), ctx.should_stop()) == seen, f"the context to see {control.name}")


class InThread:
    """Runs ``fn`` on a thread; ``join()`` re-raises what it raised."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.error: BaseException | None = None

        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - JobStop is a BaseException; handed to the test
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> BaseException | None:
        self.thread.join(BACKSTOP_S)
        assert not self.thread.is_alive(), "the pause point never returned"
        return self.error


def state_names(store: JobStore) -> list[str]:
    return [e.data["state"] for e in store.events("job-unit") if e.kind == "state"]


@pytest.fixture
def ctx_parts(runtime: Runtime) -> tuple[JobContext, JobStore, Switch]:
    store = JobStore(runtime.db)
    store.create("job-unit", "count", {"n": 3}, "default")
    assert store.launch("job-unit")
    switch = Switch()
    settings = runtime.settings.model_copy(update={"job_progress_interval": 0.0})
    ctx = JobContext(store, store.get("job-unit"), settings, watcher=ControlWatcher(switch, 0.01))
    switch.ctx = ctx
    ctx.start()
    yield ctx, store, switch
    ctx.close()


def test_pause_point_blocks_in_place_until_resumed(ctx_parts) -> None:  # type: ignore[no-untyped-def]
    ctx, store, switch = ctx_parts
    ctx.progress(1, 3, loss=0.5)
    ctx.pause_point()  # nothing requested: returns at once
    switch.flip(Control.PAUSE, "test")
    assert ctx.should_pause() and not ctx.should_stop()
    paused = InThread(lambda: ctx.pause_point(lambda: pytest.fail("an in-place pause writes no checkpoint")))
    wait_until(lambda: ctx.paused, "the pause recorded")
    assert paused.thread.is_alive() and state_names(store)[-1] == "paused"  # blocked in place until resumed
    switch.flip(Control.NONE, None)
    assert paused.join() is None
    assert state_names(store) == ["queued", "running", "paused", "running"]
    assert store.get("job-unit").state == JobState.RUNNING


def test_pause_point_checkpoints_and_exits_to_free_memory(ctx_parts, tmp_path: Path):  # type: ignore
    ctx, store, switch = ctx_parts
    ctx.progress(2, 3)
    switch.flip(Control.PAUSE_FREE, "kernel")
    saved = tmp_path / "ckpt.json"
    with pytest.raises(JobStop) as stop:
        ctx.pause_point(lambda: saved.write_text("{}") and saved)
    assert stop.value.state == JobState.PAUSED and stop.value.reason == "kernel"
    info = store.get("job-unit")
    assert info.checkpoint == str(saved)
    assert [e.data for e in store.events("job-unit") if e.kind == "checkpoint"] == [{"path": str(saved), "step": 2}]


def test_pause_point_stops_for_cancel_even_while_paused(ctx_parts) -> None:  # type: ignore[no-untyped-def]
    ctx, store, switch = ctx_parts
    switch.flip(Control.PAUSE, None)
    paused = InThread(ctx.pause_point)
    wait_until(lambda: ctx.paused, "the pause recorded")
    switch.flip(Control.CANCEL, "user")
    stop = paused.join()
    assert isinstance(stop, JobStop) and stop.state == JobState.CANCELLED


def test_reserved_event_kinds_are_refused(ctx_parts) -> None:  # type: ignore[no-untyped-def]
    ctx, store, _ = ctx_parts
    with pytest.raises(ValueError):
        ctx.event("state", x=1)
    ctx.event("eval", accuracy=0.9)
    assert store.events("job-unit")[-1].data == {"accuracy": 0.9}


def test_a_superseded_runner_stops_and_can_change_nothing(runtime: Runtime) -> None:
    store = JobStore(runtime.db)
    store.create("job-old", "count", {}, "default")
    store.launch("job-old")
    ctx = JobContext(store, store.get("job-old"), runtime.settings)  # the real watcher, reading the database
    ctx.start()
    try:
        ctx.pause_point()
        store.set_control("job-old", attempts=2)  # recovery started a second runner for this job
        ctx.wake()  # what the daemon's nudge does; the watcher's own poll would see it too
        wait_until(ctx.should_stop, "the runner to see it is superseded")
        with pytest.raises(JobStop) as stop:
            ctx.pause_point()
        assert stop.value.state is None
        assert not store.transition("job-old", JobState.SUCCEEDED, attempt=1)
        assert store.get("job-old").state == JobState.RUNNING
    finally:
        ctx.close()


def test_last_event_is_the_newest_of_its_kind_past_any_page(runtime: Runtime) -> None:
    store = JobStore(runtime.db)
    store.create("job-long", "count", {}, "default")
    assert store.last_event("job-long", "eval") is None
    for i in range(1005):  # more than one default page of events
        store.add_event("job-long", "eval", {"i": i})
    store.add_event("job-long", "log", {"line": "after"})
    last = store.last_event("job-long", "eval")
    assert last is not None and last.data == {"i": 1004}
    assert store.last_event("job-long", "state").data == {"state": "queued"}  # type: ignore[union-attr]
