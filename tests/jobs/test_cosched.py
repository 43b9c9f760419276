"""Co-scheduling: jobs in real runner processes yield to requests on a kernel, keep a minimum share,
wait for memory, and a real fine-tune completes beside real SmolLM2 traffic.

The tests of the policy's timing (hysteresis, share) move the co-scheduler's clock by hand and call
``tick()`` themselves; the requests they make stay in flight until the test opens the engine's gate.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from llmos.daemon import create_app
from llmos.cli import app as cli
from llmos.engines.base import FakeEngine
from llmos.kernel.core import Activity, Kernel
from llmos.jobs.freeze import is_stopped
from llmos.jobs.cosched import MEMORY_REASON, TRAFFIC_REASON, CoScheduler
from llmos.jobs import JobEventInfo, JobRunner, JobState, register_job_kind
from llmos.kernel.request import Request
from llmos.engines.types import SamplingParams
from llmos.runtime import Runtime, open_runtime
from tests.conftest import ModuleDirs, make_settings
from tests.kernel.conftest import FakeClock
from tests.api.conftest import SlowFakeEngine
from tests.api.server import serving
from tests.jobs.jobkinds import steps_done
from tests.train.conftest import MINILM, SMOL, Home, finished, import_sst2
from tests.waiting import BACKSTOP_S, wait_for_job, wait_until

MODEL = "lm"  # a real stored model (MiniLM's files) whose size drives memory; its engines are fakes
FAST = {"job_progress_interval": 0.0, "job_poll_interval": 0.05, "job_stop_timeout": BACKSTOP_S,
        "cosched_resume_after_s": 0.3, "cosched_min_share": 0.0}
# For the tests that drive the co-scheduler by hand: the runner writes no progress rows and reads its
# control request only when nudged, so it is almost never inside a database session and each freeze
# lands at once (a freeze waits only briefly for a session to end). Progress is read from steps.log.
QUIET = {"job_progress_interval": 1e9, "job_poll_interval": 1.0}
ENDLESS = {"n": 1_000_000, "delay": 0.02}


class GatedEngine(FakeEngine):
    """A FakeEngine whose prefill waits until the test opens ``gate``: a request stays in flight."""

    gate: threading.Event

    def prefill(self, seqs):  # type: ignore[no-untyped-def]
        assert self.gate.wait(BACKSTOP_S), "the test never opened the engine's gate"
        return super().prefill(seqs)


@dataclass
class Setup:
    rt: Runtime
    kernel: Kernel
    jobs: JobRunner
    cosched: CoScheduler
    engines: list[FakeEngine] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    clock: FakeClock | None = None  # set: the test ticks the co-scheduler itself

    def request(self, tokens: int) -> Request:
        ref = self.kernel.registry.get(MODEL).ref  # what the kernel resolves the name to
        req = Request(model=ref, prompt_ids=[1, 2, 3], params=SamplingParams(max_tokens=tokens))
        self.kernel.worker(ref).submit(req)
        return req

    def tick(self, seconds: float) -> None:
        assert self.clock is not None
        self.clock.advance(seconds)
        self.cosched.tick()

    def steps(self, job_id: str) -> int:
        return len(steps_done(self.jobs.settings.jobs_dir / job_id / "work"))


@pytest.fixture(autouse=True)
def kinds() -> None:
    register_job_kind("count", "tests.jobs.jobkinds:count", replace=True)


@pytest.fixture(scope="module")
def models(module_dirs: ModuleDirs, minilm_dir: Path) -> Iterator[Runtime]:
    rt = open_runtime(make_settings(module_dirs("models")), builtins=False)
    rt.store.importer.import_path(minilm_dir, MODEL)
    yield rt
    rt.close()


@pytest.fixture
def make_setup(models: Runtime, tmp_path: Path) -> Iterator[Callable[..., Setup]]:
    """A fake-engine kernel over a real store (the model's size drives memory), a JobRunner with real
    runner processes in a fresh home, and a co-scheduler between them: on its own thread, or with
    ``by_hand=True`` on a clock the test moves (``Setup.tick``), its engines gated (``Setup.gate``)."""
    made: list[Setup] = []

    def build(footprint: int = 1000, estimate: Callable | None = None, by_hand: bool = False,
              **overrides: object) -> Setup:
        settings = make_settings(tmp_path / "home", **{**FAST, **(QUIET if by_hand else {}), **overrides})
        rt = open_runtime(settings, builtins=False)
        engines: list[FakeEngine] = []
        gate = threading.Event()

        def factory(ref: str) -> FakeEngine:
            engine = GatedEngine(ref, footprint_bytes=footprint) if by_hand else SlowFakeEngine(ref, footprint_bytes=footprint)
            engine.gate = gate
            engines.append(engine)
            return engine

        kernel = Kernel(settings, models.store.registry, engine_factory=factory)
        jobs = JobRunner(rt)
        clock = FakeClock() if by_hand else None
        cosched = CoScheduler(settings, kernel, jobs, estimate=estimate, **({"clock": clock} if clock else {}))
        jobs.startup()
        if not by_hand:
            cosched.start()
        made.append(s := Setup(rt, kernel, jobs, cosched, engines, gate, clock))
        return s

    yield build
    for s in made:
        s.gate.set()
        s.cosched.stop()
        s.jobs._stopping.set()  # noqa: SLF001 - end supervision without waiting for runners
        for info in s.jobs.list():
            if info.pid and psutil.pid_exists(info.pid):
                os.kill(info.pid, signal.SIGKILL)
        s.kernel.close()
        s.rt.close()


def state_events(jobs: JobRunner, job_id: str) -> list[JobEventInfo]:
    return [e for e in jobs.events(job_id, limit=100_000) if e.kind in ("state", "control", "waiting")]


@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "pause-point"])
def test_a_request_pauses_the_job_and_it_resumes_after_the_hysteresis(make_setup: Callable[..., Setup],
                                                                     freeze: bool) -> None:
    s = make_setup(cosched_freeze=freeze, by_hand=True)
    job_id = s.jobs.submit("count", ENDLESS)
    wait_until(lambda: s.steps(job_id) >= 5, "the job runs", job=(s.jobs, job_id))
    req = s.request(tokens=5)  # in flight until the gate opens
    s.tick(0.0)
    if freeze:  # the OS stopped the runner outright, before tick() returned
        assert s.jobs.frozen() == [job_id] and s.jobs.get(job_id).state == JobState.PAUSED
    paused = wait_for_job(s.jobs, job_id, JobState.PAUSED)
    pid = paused.pid
    assert pid is not None
    wait_until(lambda: is_stopped(pid) == freeze, "the runner stopped" if freeze else "the runner paused in place")
    paused_step = s.steps(job_id)
    s.gate.set()
    wait_until(lambda: req.status.finished, "the request finished")
    s.tick(0.1)  # no load now, but for less than cosched_resume_after_s
    assert s.jobs.get(job_id).state == JobState.PAUSED and s.cosched.stats().holding  # hysteresis
    assert s.steps(job_id) == paused_step  # no step while held
    s.tick(0.25)  # the load has been gone for longer than cosched_resume_after_s
    assert not s.cosched.stats().holding
    wait_for_job(s.jobs, job_id, JobState.RUNNING)
    assert not is_stopped(pid)
    wait_until(lambda: s.steps(job_id) > paused_step + 3, "the job advanced", job=(s.jobs, job_id))

    events = state_events(s.jobs, job_id)
    paused_event = next(e for e in events if e.kind == "state" and e.data["state"] == "paused")
    assert paused_event.data["reason"] == TRAFFIC_REASON and bool(paused_event.data.get("frozen")) == freeze
    assert any(e.kind == "state" and e.data.get("resumed") for e in events)
    if not freeze:  # at its next step boundary
        control = next(e for e in events if e.kind == "control" and e.data["requested"] == "pause")
        assert control.data["reason"] == TRAFFIC_REASON and paused_event.data["step"] == paused_step
    done = steps_done(s.jobs.settings.jobs_dir / job_id / "work")
    assert done == list(range(1, len(done) + 1))  # no step lost or repeated
    stats = s.cosched.stats()
    assert stats.pauses == 1 and stats.resumes == 1 and stats.holding is False
    assert stats.held_s == pytest.approx(0.35)  # held from the request until the hysteresis ran out
    s.jobs.cancel(job_id)
    assert wait_for_job(s.jobs, job_id).state == JobState.CANCELLED


def test_a_frozen_job_is_cancelled_or_paused_by_a_person_at_once(make_setup: Callable[..., Setup]) -> None:
    s = make_setup(by_hand=True)  # no tick after the first: the hold outlasts the test
    first = s.jobs.submit("count", ENDLESS)
    wait_until(lambda: s.steps(first) >= 3, "the job runs", job=(s.jobs, first))
    s.request(tokens=5)
    s.tick(0.0)
    assert s.jobs.frozen() == [first]
    s.jobs.pause(first)  # thawed to reach its pause point, then paused the ordinary way
    # thawing writes a state event of its own; the pause is over when the job reads paused
    wait_until(lambda: s.jobs.get(first).state == JobState.PAUSED, "a person's pause", job=(s.jobs, first))
    info = s.jobs.get(first)
    assert state_events(s.jobs, first)[-1].data.get("reason") == "user"
    assert info.pid is not None and not is_stopped(info.pid)
    assert s.jobs.frozen() == []
    s.jobs.cancel(first)
    assert wait_for_job(s.jobs, first).state == JobState.CANCELLED


@pytest.mark.slow
def test_constant_traffic_still_leaves_the_job_its_minimum_share(make_setup: Callable[..., Setup]) -> None:
    s = make_setup(cosched_min_share=0.3, cosched_window_s=3.0, by_hand=True)
    job_id = s.jobs.submit("count", {"n": 1_000_000, "delay": 0.01})
    wait_until(lambda: s.steps(job_id) >= 3, "the job runs", job=(s.jobs, job_id))
    s.request(tokens=10)  # constant traffic: in flight for the whole test
    s.tick(0.0)
    assert s.cosched.stats().holding
    held_at = s.steps(job_id)
    slices = 0
    for _ in range(120):  # two windows, in 50 ms ticks
        holding = s.cosched.stats().holding
        s.tick(0.05)
        if holding and not s.cosched.stats().holding:  # a slice for the job's share: it really runs in it
            slices += 1
            before = s.steps(job_id)
            wait_until(lambda: s.steps(job_id) > before, "a step in the job's slice", job=(s.jobs, job_id))
    stats = s.cosched.stats()
    assert slices >= 2 and stats.share_resumes >= 2 and s.steps(job_id) > held_at
    assert stats.run_share is not None and 0.2 <= stats.run_share <= 0.7, stats
    events = state_events(s.jobs, job_id)
    assert sum(1 for e in events if e.kind == "state" and e.data.get("resumed")) >= 2  # slices, not one run


@pytest.mark.slow
def test_a_job_waits_for_memory_and_yields_it_to_a_model_load(models: Runtime,
                                                              make_setup: Callable[..., Setup]) -> None:
    need = int(models.store.registry.get(MODEL).manifest.size_bytes * 1.25)  # the kernel's estimate
    s = make_setup(footprint=need, estimate=lambda info: int(info.spec.get("need", 0)),
                   memory_budget=int(need * 1.5), keep_alive=600)
    s.kernel.load(MODEL)
    job_id = s.jobs.submit("count", {**ENDLESS, "need": need})
    job = (s.jobs, job_id)
    wait_until(lambda: any(e.kind == "waiting" for e in state_events(s.jobs, job_id)), "a waiting event", job=job)
    info = s.jobs.get(job_id)
    assert info.state == JobState.QUEUED and "needs about" in (info.reason or "") and info.pid is None
    assert s.kernel.unload(MODEL)
    wait_until(lambda: s.jobs.get(job_id).progress.step >= 3, "the job started once memory was free", job=job)
    assert s.kernel.resources.reservations() == {f"job {job_id}": need}
    # A request now needs the model, which no longer fits beside the job: the job checkpoints and leaves.
    req = s.request(tokens=5)
    wait_until(lambda: req.status.finished, "the request ran")
    assert req.output_ids == [1, 2, 3, 4, 5]
    events = state_events(s.jobs, job_id)
    freeing = [e for e in events if e.kind == "control" and e.data["requested"] == "pause_free"]
    assert freeing and freeing[0].data["reason"] == MEMORY_REASON
    assert any(e.kind == "state" and e.data.get("exited") for e in events)
    assert s.cosched.stats().memory_pauses == 1
    # Requeued once no load waits; it stays queued (the model holds the memory) until the model unloads.
    wait_for_job(s.jobs, job_id, JobState.QUEUED)
    wait_until(lambda: s.jobs.get(job_id).reason is not None, "waiting again", job=job)
    assert s.kernel.unload(MODEL)
    wait_until(lambda: s.jobs.get(job_id).state == JobState.RUNNING and s.jobs.get(job_id).attempts == 2,
               "a second runner", job=job)
    s.jobs.cancel(job_id)
    wait_for_job(s.jobs, job_id)
    wait_until(lambda: not s.kernel.resources.reservations(), "the reservation given back")


# -- the policy alone, on a clock the test moves -------------------------------------------------------
class PolicyKernel:
    """Only what the co-scheduler reads from a kernel: activity and memory."""

    def __init__(self, budget: int = 1000) -> None:
        from llmos.kernel.resources import ResourceManager

        self.act = Activity(0, 0, 0, 0, [])
        self.resources = ResourceManager(budget, loader=FakeEngine, estimate=lambda ref: 1)

    def activity(self, ttft_window_s: float = 10.0) -> Activity:
        return self.act


class RecordingJobs:
    """A JobRunner stand-in with one live job; records the co-scheduler's calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.admission = None
        self.running = True  # False: the job is queued, not started

    def live(self) -> list[str]:
        return ["job-1"] if self.running else []

    def has_queued(self) -> bool:
        return not self.running

    def pause_all(self, reason: str, *, free_memory: bool = False) -> list[str]:
        self.calls.append("pause")
        return ["job-1"]

    def resume_all(self, reason: str) -> list[str]:
        self.calls.append("resume")
        return ["job-1"]

    freeze_all = pause_all  # the policy is the same whichever way the runner stops
    thaw_all = resume_all


def policy(**settings: object) -> tuple[CoScheduler, PolicyKernel, RecordingJobs, FakeClock]:
    clock, kernel, jobs = FakeClock(), PolicyKernel(), RecordingJobs()
    s = make_settings(Path("/nonexistent"), **{**FAST, **settings})
    return CoScheduler(s, kernel, jobs, clock=clock), kernel, jobs, clock  # type: ignore[arg-type]


def run(c: CoScheduler, clock: FakeClock, seconds: float, step: float = 0.05) -> None:
    for _ in range(round(seconds / step)):
        clock.advance(step)
        c.tick()


def test_policy_hysteresis_priorities_and_share() -> None:
    c, kernel, jobs, clock = policy(cosched_resume_after_s=0.5)
    kernel.act = Activity(1, 0, 0, 0, [])
    run(c, clock, 1.0)
    kernel.act = Activity(0, 0, 0, 0, [])
    run(c, clock, 0.4)
    assert jobs.calls == ["pause"]  # a short gap keeps the hold
    run(c, clock, 0.2)
    assert jobs.calls == ["pause", "resume"]

    c, kernel, jobs, clock = policy(cosched_priority="balanced", ttft_target_ms=500)
    kernel.act = Activity(0, 3, 0, 0, [0.1, 0.2])  # running, nobody waiting, fast first tokens: no pause
    run(c, clock, 1.0)
    assert jobs.calls == []
    kernel.act = Activity(0, 3, 0, 0, [0.1] * 10 + [0.9])  # p95 over the target
    run(c, clock, 0.1)
    assert jobs.calls == ["pause"]

    c, kernel, jobs, clock = policy(cosched_priority="job")
    kernel.act = Activity(5, 5, 0, 0, [])
    run(c, clock, 1.0)
    assert jobs.calls == []

    c, kernel, jobs, clock = policy(cosched_min_share=0.2, cosched_window_s=10.0)
    kernel.act = Activity(1, 1, 0, 0, [])
    run(c, clock, 60.0)  # constant traffic for six windows
    share = c.stats().run_share
    assert share is not None and 0.18 <= share <= 0.35, share
    assert c.stats().share_resumes >= 5 and jobs.calls.count("pause") == jobs.calls.count("resume") + 1

    c, kernel, jobs, clock = policy(cosched_min_share=0.2, cosched_window_s=10.0)
    jobs.running = False  # queued when the traffic began: held, it must still get its turn to start
    kernel.act = Activity(1, 1, 0, 0, [])
    run(c, clock, 5.0)
    assert jobs.calls[:2] == ["pause", "resume"]


def test_admission_reserves_memory_and_explains_a_wait() -> None:
    from llmos.jobs.types import JobInfo, JobProgress

    c, kernel, _, _ = policy()
    c._estimate = lambda info: info.spec["need"]  # noqa: SLF001

    def job(job_id: str, need: int) -> JobInfo:
        return JobInfo(job_id, "train", JobState.QUEUED, "default", {"need": need}, JobProgress(), None)  # type: ignore[arg-type]

    assert c.admit(job("a", 600)) is None
    assert kernel.resources.reservations() == {"job a": 600}
    reason = c.admit(job("b", 600))
    assert reason is not None and "needs about 600 B" in reason and "600 B of the 1.0 KB budget" in reason
    assert "whole memory budget" in (c.admit(job("c", 5000)) or "")
    c.released("a")
    assert c.admit(job("b", 600)) is None and kernel.resources.reservations() == {"job b": 600}
    assert c.stats().memory_waits == 2


# -- real models ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_real_fine_tune_yields_to_smollm2_chats_and_completes(builtin_runtime: Runtime, datasets: Path,
                                                                 tmp_path: Path) -> None:
    home = Home(tmp_path / "home", builtin_runtime)
    try:
        home.add_builtin(MINILM)
        home.add_builtin(SMOL)
        import_sst2(home, datasets, train=64, dev=24)
        rt = home.open()
        kernel, jobs = Kernel(rt.settings, rt.store.registry), JobRunner(rt)
        home.runners.append((jobs, rt))
        with serving(create_app(rt, kernel, jobs)) as url, httpx.Client(base_url=url, timeout=BACKSTOP_S) as http:
            def chat(text: str) -> None:
                r = http.post("/v1/chat/completions", json={"model": SMOL, "max_tokens": 12,
                                                            "messages": [{"role": "user", "content": text}]})
                assert r.status_code == 200, r.text

            chat("Say hello.")  # loaded before the job starts: the test is about yielding, not loading
            r = http.post("/v1/training/jobs", json={
                "model": MINILM, "dataset": "sst2", "method": "full", "name": "cosched-sst2",
                "hyperparameters": {"epochs": 1, "batch_size": 8, "max_length": 48, "max_eval_rows": 24}})
            assert r.status_code == 200, r.text
            job_id = r.json()["id"]
            wait_until(lambda: jobs.get(job_id).progress.step >= 2, "training started", job=(jobs, job_id))
            for text in ("Name a colour.", "Say goodbye."):
                chat(text)
            info = finished(jobs, job_id)
            ps = http.get("/admin/ps").json()
            show = CliRunner().invoke(cli, ["jobs", "show", job_id, "--url", url], env={"COLUMNS": "200"})
            metrics = http.get("/metrics").text
        assert show.exit_code == 0 and f"(reason {TRAFFIC_REASON}" in show.output, show.output
        assert "llmos_cosched_pauses" in metrics and "llmos_cosched_job_share" in metrics
        events = state_events(jobs, job_id)
        held = [e for e in events if e.kind == "state" and e.data.get("reason") == TRAFFIC_REASON]
        assert held and held[0].data["state"] == "paused"
        assert any(e.kind == "state" and e.data.get("resumed") for e in events)
        assert info.result_model == "cosched-sst2:v1" and info.attempts == 1  # paused in place, never restarted
        assert ps["cosched"]["pauses"] >= 1 and ps["cosched"]["resumes"] >= 1
    finally:
        home.close()
