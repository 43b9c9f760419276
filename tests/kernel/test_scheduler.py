"""The scheduler driven against a FakeEngine: continuous batching, backpressure, cancellation."""

from __future__ import annotations

import pytest

from llmos.engines.base import FakeEngine
from llmos.errors import Conflict, QueueFull
from llmos.kernel.request import Request
from llmos.engines.types import RequestStatus, SamplingParams, StepOutput
from llmos.kernel.scheduler import DEFAULT_RETRY_AFTER, Batch, RateMeter, Scheduler

from .conftest import FakeClock


def req(name: str, max_tokens: int = 4, **kw: object) -> Request:
    return Request(model="m", prompt_ids=[1, 2], id=name, params=SamplingParams(max_tokens=max_tokens), **kw)


def run_step(sched: Scheduler, engine: FakeEngine,
             clock: FakeClock | None = None) -> tuple[Batch | None, list[Request]]:
    """One iteration of the kernel loop, exactly as the module docstring prescribes."""
    batch = sched.step()
    if batch is None:
        return None, []
    outs: list[StepOutput] = []
    if batch.prefill:
        outs += engine.prefill(batch.prefill_specs())
    if batch.decode:
        outs += engine.decode(batch.decode_ids())
    if clock is not None:
        clock.advance(0.1)
    done = sched.update(outs)
    engine.release([r.id for r in done] + sched.drain_cancelled())
    return batch, done


def ids(reqs: list[Request]) -> list[str]:
    return [r.id for r in reqs]


def test_nothing_to_do_returns_none() -> None:
    assert Scheduler().step() is None
    assert not Scheduler().has_work()


def test_fcfs_admission_and_full_generation(clock: FakeClock) -> None:
    sched, engine = Scheduler(clock=clock), FakeEngine()
    a = req("a", max_tokens=3)
    sched.add(a)
    assert a.status == RequestStatus.WAITING and ids(sched.waiting) == ["a"]
    batch, done = run_step(sched, engine, clock)
    assert ids(batch.prefill) == ["a"] and batch.decode == []
    assert a.status == RequestStatus.RUNNING and a.first_token_at == clock.now
    first = a.first_token_at
    run_step(sched, engine, clock)
    _, done = run_step(sched, engine, clock)
    assert done == [a]
    assert a.output_ids == [1, 2, 3] and a.output_text == "t1 t2 t3 "
    assert a.status == RequestStatus.FINISHED_LENGTH and a.finish_reason == "length"
    assert a.first_token_at == first and a.finished_at == clock.now
    assert engine.live == [] and sched.running == [] and sched.step() is None


def test_scheduler_admits_in_policy_order() -> None:
    sched = Scheduler("priority", max_batch=2)
    for name, prio in [("lo", 0), ("hi", 3), ("mid", 1)]:
        sched.add(req(name, priority=prio))
    assert ids(sched.waiting) == ["hi", "mid", "lo"]
    assert ids(sched.step().prefill) == ["hi", "mid"]
    assert ids(sched.waiting) == ["lo"]


def test_fair_scheduler_admits_the_small_tenant_early() -> None:
    sched = Scheduler("fair", max_queue=64, max_batch=4)
    for i in range(20):
        sched.add(req(f"A{i}", tenant="A"))
    sched.add(req("B0", tenant="B"))
    sched.add(req("B1", tenant="B"))
    assert ids(sched.step().prefill) == ["A0", "B0", "A1", "B1"]


def test_late_request_joins_the_running_batch_at_the_next_step(clock: FakeClock) -> None:
    sched, engine = Scheduler(clock=clock), FakeEngine()
    sched.add(req("a", max_tokens=10))
    run_step(sched, engine, clock)
    run_step(sched, engine, clock)
    sched.add(req("late", max_tokens=10))  # arrives while "a" is decoding
    batch, _ = run_step(sched, engine, clock)
    assert ids(batch.prefill) == ["late"] and ids(batch.decode) == ["a"]
    batch, _ = run_step(sched, engine, clock)
    assert batch.prefill == [] and ids(batch.decode) == ["a", "late"]  # one decode call for both
    assert engine.calls[-1] == ("decode", ["a", "late"])
    assert sched.get("a").output_ids == [1, 2, 3, 4] and sched.get("late").output_ids == [1, 2]


def test_finished_request_leaves_at_once_and_its_slot_is_reused(clock: FakeClock) -> None:
    sched, engine = Scheduler(max_batch=2, clock=clock), FakeEngine()
    sched.add(req("short", max_tokens=1))
    sched.add(req("long", max_tokens=10))
    sched.add(req("next", max_tokens=10))
    batch, done = run_step(sched, engine, clock)
    assert ids(batch.prefill) == ["short", "long"]
    assert ids(done) == ["short"] and ids(sched.running) == ["long"]  # gone before the next step
    assert ids(sched.waiting) == ["next"]
    batch, _ = run_step(sched, engine, clock)
    assert ids(batch.prefill) == ["next"] and ids(batch.decode) == ["long"]
    assert sorted(engine.live) == ["long", "next"]  # "short" was released


def test_max_batch_is_respected_under_load(clock: FakeClock) -> None:
    sched, engine = Scheduler(max_queue=64, max_batch=3, clock=clock), FakeEngine()
    for i in range(10):
        sched.add(req(f"r{i}", max_tokens=2 + i % 3))
    finished: list[str] = []
    steps = 0
    while sched.has_work():
        batch, done = run_step(sched, engine, clock)
        assert len(batch) <= 3 and len(sched.running) <= 3
        assert len(engine.live) <= 3
        finished += ids(done)
        steps += 1
        assert steps < 100
    assert sorted(finished) == sorted(f"r{i}" for i in range(10))
    stats = sched.stats()
    assert stats.admitted == 10 and stats.finished == 10 and stats.running == 0 and stats.waiting == 0
    assert stats.tokens_generated == sum(2 + i % 3 for i in range(10))


def test_engine_stop_status_and_error_are_applied(clock: FakeClock) -> None:
    sched = Scheduler(clock=clock)
    for name in ["eos", "err", "bare"]:
        sched.add(req(name, max_tokens=50))
    sched.step()
    done = sched.update([
        StepOutput("eos", 7, "x", finished=True, status=RequestStatus.FINISHED_STOPPED),
        StepOutput("err", 0, "", finished=True, status=RequestStatus.FINISHED_ERROR, error="boom"),
        StepOutput("bare", 9, "y", finished=True),  # finished without a status: a plain stop
        StepOutput("ghost", 1, "z"),  # unknown ids are ignored
    ])
    assert {r.id: r.status for r in done} == {
        "eos": RequestStatus.FINISHED_STOPPED,
        "err": RequestStatus.FINISHED_ERROR,
        "bare": RequestStatus.FINISHED_STOPPED,
    }
    assert sched.get("err") is None and done[1].error == "boom"
    stats = sched.stats()
    assert stats.errored == 1 and stats.finished == 3 and stats.tokens_generated == 3


def test_scheduler_caps_a_runaway_engine_at_max_tokens() -> None:
    sched = Scheduler()
    sched.add(req("r", max_tokens=2))
    sched.step()
    assert sched.update([StepOutput("r", 1)]) == []
    (done,) = sched.update([StepOutput("r", 2)])  # the engine forgot to stop it
    assert done.status == RequestStatus.FINISHED_LENGTH


def test_queue_overflow_raises_queue_full_with_retry_after() -> None:
    sched = Scheduler(max_queue=2, max_batch=1)
    sched.add(req("a"))
    sched.add(req("b"))
    with pytest.raises(QueueFull) as exc:
        sched.add(req("c"))
    assert exc.value.retry_after == DEFAULT_RETRY_AFTER > 0
    assert exc.value.http_status == 503 and "2 requests waiting (limit 2)" in exc.value.message
    assert ids(sched.waiting) == ["a", "b"] and sched.stats().rejected == 1
    sched.step()  # "a" is admitted: a queue place frees, running requests do not count
    sched.add(req("c"))
    assert ids(sched.waiting) == ["b", "c"]


def test_retry_after_follows_recent_throughput(clock: FakeClock) -> None:
    sched, engine = Scheduler(max_queue=4, max_batch=2, clock=clock), FakeEngine()
    for step in range(8):  # 0.1 s per step; each request takes 2 steps, two run at a time
        while len(sched.waiting) < 4:  # keep the queue full
            sched.add(req(f"r{step}-{len(sched.waiting)}", max_tokens=2))
        run_step(sched, engine, clock)
    stats = sched.stats()
    assert stats.tokens_per_s == pytest.approx(20.0)  # 2 tokens per 0.1 s step
    assert stats.retry_after == pytest.approx(0.1)  # a request finishes every step
    with pytest.raises(QueueFull) as exc:
        sched.add(req("over"))
    assert exc.value.retry_after == pytest.approx(0.1)


def test_retry_after_before_any_finish_uses_the_nearest_max_tokens(clock: FakeClock) -> None:
    sched, engine = Scheduler(max_queue=1, max_batch=1, clock=clock), FakeEngine()
    sched.add(req("long", max_tokens=100))
    for _ in range(11):  # 10 tokens/s after the first (window-opening) step
        run_step(sched, engine, clock)
    sched.add(req("queued"))
    with pytest.raises(QueueFull) as exc:
        sched.add(req("over"))
    assert exc.value.retry_after == pytest.approx(8.9)  # 89 tokens left at 10 tokens/s


def test_rate_meter_needs_two_samples_and_forgets_old_ones() -> None:
    meter = RateMeter(window_s=10.0)
    assert meter.rates(0.0) is None
    meter.record(0.0, 5, 0)
    assert meter.rates(0.0) is None
    meter.record(1.0, 4, 1)
    assert meter.rates(2.0) == pytest.approx((2.0, 0.5))
    assert meter.rates(100.0) is None  # idle for long: no recent rate to speak of


def test_cancel_waiting_request() -> None:
    sched = Scheduler(clock=lambda: 5.0)
    sched.add(req("a"))
    sched.add(req("b"))
    cancelled = sched.cancel("a")
    assert cancelled is not None and cancelled.status == RequestStatus.FINISHED_ABORTED
    assert cancelled.finished_at == 5.0 and cancelled.finish_reason == "abort"
    assert ids(sched.waiting) == ["b"]
    assert sched.drain_cancelled() == []  # never reached an engine: nothing to release
    assert sched.cancel("a") is None and sched.cancel("unknown") is None


def test_cancel_running_request_frees_its_slot_and_is_released(clock: FakeClock) -> None:
    sched, engine = Scheduler(max_batch=1, clock=clock), FakeEngine()
    sched.add(req("a", max_tokens=50))
    sched.add(req("b", max_tokens=50))
    run_step(sched, engine, clock)
    assert engine.live == ["a"]
    batch = sched.step()  # the kernel is mid-iteration on "a" when the client goes away
    outs = engine.decode(batch.decode_ids())
    cancelled = sched.cancel("a")
    assert cancelled.status == RequestStatus.FINISHED_ABORTED and sched.running == []
    assert sched.update(outs) == []  # its late token is ignored
    assert cancelled.output_ids == [1]
    assert sched.drain_cancelled() == ["a"] and sched.drain_cancelled() == []
    engine.release(["a"])
    batch, _ = run_step(sched, engine, clock)
    assert ids(batch.prefill) == ["b"] and batch.decode == []
    assert sched.stats().aborted == 1


def test_fail_marks_waiting_and_running_requests_as_errors(clock: FakeClock) -> None:
    sched = Scheduler(max_batch=1, clock=clock)
    sched.add(req("run"))
    sched.step()
    sched.add(req("wait"))
    failed = sched.fail(["run", "wait", "unknown"], "model failed to load: out of memory")
    assert ids(failed) == ["run", "wait"]
    for r in failed:
        assert r.status == RequestStatus.FINISHED_ERROR and r.finish_reason == "error"
        assert r.error == "model failed to load: out of memory" and r.finished_at == clock.now
    assert not sched.has_work() and sched.stats().errored == 2


def test_fail_all() -> None:
    sched = Scheduler(max_batch=1)
    for n in "abc":
        sched.add(req(n))
    sched.step()
    assert sorted(ids(sched.fail_all("engine crashed"))) == ["a", "b", "c"]
    assert sched.step() is None


def test_add_refuses_duplicates_and_finished_requests() -> None:
    sched = Scheduler()
    sched.add(req("a"))
    with pytest.raises(Conflict):
        sched.add(req("a"))
    sched.step()
    with pytest.raises(Conflict):
        sched.add(req("a"))  # running counts too
    done = req("d")
    done.status = RequestStatus.FINISHED_STOPPED
    with pytest.raises(ValueError):
        sched.add(done)


def test_bad_limits_and_policy_are_refused() -> None:
    with pytest.raises(ValueError):
        Scheduler(max_batch=0)
    with pytest.raises(Exception, match="unknown queue policy"):
        Scheduler("nope")


def test_adapters_of_one_base_share_a_batch(clock: FakeClock) -> None:
    sched, engine = Scheduler(clock=clock), FakeEngine()
    engine.add_adapter("sql", "/x")
    sched.add(req("base"))
    sched.add(req("lora", adapter="sql"))
    batch, _ = run_step(sched, engine, clock)
    assert [s.adapter for s in batch.prefill_specs()] == [None, "sql"]
    assert engine.calls == [("prefill", ["base", "lora"])]


def test_prefill_token_budget_splits_a_burst_into_groups() -> None:
    sched = Scheduler(max_batch=8, max_prefill_tokens=10)
    for n in (4, 4, 4, 30, 2):
        sched.add(Request(model="m", prompt_ids=[1] * n))
    first = sched.step()
    assert [len(r.prompt_ids) for r in first.prefill] == [4, 4]  # a third 4 would pass the budget
    second = sched.step()
    assert [len(r.prompt_ids) for r in second.prefill] == [4] and len(second.decode) == 2
    third = sched.step()
    assert [len(r.prompt_ids) for r in third.prefill] == [30]  # alone: always at least one
    assert [len(r.prompt_ids) for r in sched.step().prefill] == [2]
