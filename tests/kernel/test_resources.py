"""The resource manager with fake engines, a fake clock and real threads."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import pytest

from llmos.engines.base import Engine, FakeEngine
from llmos.errors import Conflict, ModelNotFound, WontFit
from llmos.kernel.resources import ResourceManager

from tests.waiting import BACKSTOP_S, wait_until

from .conftest import FakeClock

SIZES = {"a": 400, "b": 400, "c": 400, "big": 5_000, "half": 500}


class Loader:
    """Builds FakeEngines sized from SIZES; counts calls; can be gated or made to fail."""

    def __init__(self, measured: dict[str, int] | None = None) -> None:
        self.calls: list[str] = []
        self.engines: dict[str, list[FakeEngine]] = {}
        self.measured = measured or {}
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self.fail_with: Exception | None = None

    def __call__(self, model: str) -> Engine:
        self.calls.append(model)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(BACKSTOP_S), "test gate never opened"
        if self.fail_with is not None:
            raise self.fail_with
        engine = FakeEngine(model, footprint_bytes=self.measured.get(model, SIZES[model]))
        self.engines.setdefault(model, []).append(engine)
        return engine


def estimate(model: str) -> int:
    if model not in SIZES:
        raise ModelNotFound.for_name(model, SIZES)
    return SIZES[model]


def make(clock: FakeClock, budget: int = 1000, loader: Loader | None = None,
         **kw: object) -> tuple[ResourceManager, Loader]:
    loader = loader or Loader()
    return ResourceManager(budget, loader=loader, estimate=estimate, clock=clock, **kw), loader


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the test thread to assert on
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def test_first_acquire_loads_then_shares(clock: FakeClock) -> None:
    rm, loader = make(clock)
    e1 = rm.acquire("a")
    clock.advance(1)
    e2 = rm.acquire("a")
    assert e1 is e2 and loader.calls == ["a"]
    (row,) = rm.snapshot()
    assert (row.model, row.refcount, row.footprint) == ("a", 2, 400)
    assert row.loaded_at == 1000.0 and row.last_used == 1001.0 and row.expires_at is None
    rm.release("a")
    clock.advance(1)
    rm.release("a")
    (row,) = rm.snapshot()
    assert row.refcount == 0 and row.last_used == 1002.0 and row.expires_at == 1302.0
    assert rm.is_loaded("a") and rm.used_bytes == 400 and rm.budget_bytes == 1000


def test_release_without_acquire_is_an_error(clock: FakeClock) -> None:
    rm, _ = make(clock)
    with pytest.raises(ValueError, match="without a matching acquire"):
        rm.release("a")
    rm.load("a")
    with pytest.raises(ValueError):
        rm.release("a")


def test_records_measured_footprint_not_the_estimate(clock: FakeClock) -> None:
    rm, _ = make(clock, loader=Loader(measured={"a": 350}))
    rm.load("a")
    assert rm.snapshot()[0].footprint == 350 and rm.used_bytes == 350


def test_footprint_over_estimate_evicts_idle_models_to_get_back_in_budget(clock: FakeClock) -> None:
    rm, loader = make(clock, loader=Loader(measured={"b": 700}))
    rm.load("a")
    rm.acquire("b")  # estimated 400 (fits beside a), measures 700: a must go
    assert [r.model for r in rm.snapshot()] == ["b"] and loader.engines["a"][0].closed


def test_lru_eviction_picks_the_least_recently_used_idle_model(clock: FakeClock) -> None:
    rm, loader = make(clock, budget=1000)
    rm.load("a")
    clock.advance(1)
    rm.load("b")
    clock.advance(1)
    rm.acquire("a")  # touch a: b is now the least recently used
    rm.release("a")
    clock.advance(1)
    rm.load("c")
    assert sorted(r.model for r in rm.snapshot()) == ["a", "c"]
    assert loader.engines["b"][0].closed and not loader.engines["a"][0].closed
    assert rm.used_bytes == 800


def test_eviction_frees_only_as_much_as_needed(clock: FakeClock) -> None:
    rm, loader = make(clock, budget=1300)
    for m in ["a", "b", "c"]:
        rm.load(m)
        clock.advance(1)
    rm.load("half")  # needs 500, 100 free: evicting a (400) is enough
    assert sorted(r.model for r in rm.snapshot()) == ["b", "c", "half"]


def test_never_evicts_a_model_in_use_and_times_out_clearly(clock: FakeClock) -> None:
    rm, loader = make(clock, budget=800)
    rm.acquire("a")
    rm.acquire("b")
    with pytest.raises(WontFit) as exc:
        rm.acquire("c", timeout=0.05)
    msg = exc.value.message
    assert "model 'c' needs about 400 B and only 0 B of the 800 B budget can be freed now" in msg
    assert "held by: a (400 B, 1 in use), b (400 B, 1 in use)" in msg
    assert exc.value.details["reason"] == "busy" and exc.value.retry_after > 0
    assert loader.calls == ["a", "b"] and not loader.engines["a"][0].closed
    assert rm.waiting == 0 and rm.used_bytes == 800


def test_second_model_waits_for_the_first_to_be_released(clock: FakeClock) -> None:
    rm, loader = make(clock, budget=500)
    engine_a = rm.acquire("a")
    t, result = in_thread(lambda: rm.acquire("b", timeout=BACKSTOP_S))
    wait_until(lambda: rm.waiting == 1, "b waiting")  # blocked on memory, nothing evicted
    assert loader.calls == ["a"] and not engine_a.closed
    rm.release("a")
    t.join(BACKSTOP_S)
    assert "error" not in result and result["value"] is loader.engines["b"][0]
    assert engine_a.closed and [r.model for r in rm.snapshot()] == ["b"]


def test_wont_fit_when_bigger_than_the_whole_budget(clock: FakeClock) -> None:
    rm, loader = make(clock, budget=1000)
    rm.load("a")
    with pytest.raises(WontFit) as exc:
        rm.acquire("big")
    assert "needs about 5.0 KB but the whole memory budget is 1.0 KB" in exc.value.message
    assert exc.value.details["reason"] == "too_large" and exc.value.http_status == 507
    assert loader.calls == ["a"] and rm.is_loaded("a")  # nothing evicted for a hopeless load


def test_unknown_model_error_from_estimate_propagates(clock: FakeClock) -> None:
    rm, loader = make(clock)
    with pytest.raises(ModelNotFound):
        rm.acquire("nope")
    assert loader.calls == [] and rm.snapshot() == []


def test_keep_alive_sweep_with_the_fake_clock(clock: FakeClock) -> None:
    rm, loader = make(clock, budget=2000, keep_alive_s=300)
    rm.load("a")
    rm.load("b", keep_alive_s=10)
    rm.set_keep_alive("c", math.inf)
    rm.load("c")
    held = rm.acquire("half")
    clock.advance(9.9)
    assert rm.sweep() == []
    clock.advance(0.1)
    assert rm.sweep() == ["b"] and loader.engines["b"][0].closed
    clock.advance(290)
    assert rm.sweep() == ["a"]
    clock.advance(10_000)
    assert rm.sweep() == []  # c is kept forever, half is in use
    assert sorted(r.model for r in rm.snapshot()) == ["c", "half"]
    rm.release("half")
    assert rm.sweep() == []  # its keep-alive counts from the release
    clock.advance(300)
    assert rm.sweep() == ["half"] and held.closed
    rm.set_keep_alive("c", None)  # back to the default
    assert rm.sweep() == ["c"] and rm.used_bytes == 0


def test_engine_that_cannot_report_its_footprint_is_closed_and_not_registered(clock: FakeClock) -> None:
    class Broken(FakeEngine):
        def footprint(self) -> int:
            raise RuntimeError("no memory stats")

    made: list[Broken] = []
    rm = ResourceManager(1000, loader=lambda m: made.append(Broken(m)) or made[-1], estimate=estimate, clock=clock)
    with pytest.raises(RuntimeError, match="no memory stats"):
        rm.acquire("a")
    assert made[0].closed and rm.snapshot() == [] and rm.used_bytes == 0


def test_keep_alive_must_be_non_negative(clock: FakeClock) -> None:
    rm, _ = make(clock)
    with pytest.raises(ValueError):
        rm.set_keep_alive("a", -1)
    with pytest.raises(ValueError):
        make(clock, keep_alive_s=float("nan"))


def test_loader_failure_reaches_every_waiter_and_a_later_acquire_retries(clock: FakeClock) -> None:
    loader = Loader()
    loader.gate = threading.Event()
    loader.fail_with = RuntimeError("weights are corrupt")
    rm, _ = make(clock, loader=loader)
    threads = [in_thread(lambda: rm.acquire("a")) for _ in range(3)]
    wait_until(lambda: loader.started.is_set() and rm.waiting == 2, "two waiters on the load")
    assert rm.used_bytes == 400  # the load in flight reserves its estimate
    loader.gate.set()
    for t, result in threads:
        t.join(BACKSTOP_S)
        assert isinstance(result.get("error"), RuntimeError)
    assert loader.calls == ["a"] and rm.snapshot() == [] and rm.used_bytes == 0
    loader.fail_with = None
    assert rm.acquire("a") is loader.engines["a"][0]
    assert loader.calls == ["a", "a"]


def test_concurrent_acquires_load_once(clock: FakeClock) -> None:
    loader = Loader()
    loader.gate = threading.Event()
    rm, _ = make(clock, loader=loader)
    threads = [in_thread(lambda: rm.acquire("a")) for _ in range(5)]
    wait_until(lambda: loader.started.is_set() and rm.waiting == 4, "four waiters on the load")
    loader.gate.set()
    engines = set()
    for t, result in threads:
        t.join(BACKSTOP_S)
        engines.add(id(result["value"]))
    assert loader.calls == ["a"] and len(engines) == 1
    assert rm.snapshot()[0].refcount == 5


def test_loads_of_different_models_do_not_block_each_other(clock: FakeClock) -> None:
    loader = Loader()
    loader.gate = threading.Event()
    rm, _ = make(clock, loader=loader)
    t, result = in_thread(lambda: rm.acquire("a"))
    wait_until(loader.started.is_set, "the load started")
    # The slow load of a holds no lock: other models load and snapshots answer meanwhile.
    assert rm.snapshot() == [] and rm.used_bytes == 400
    gate, loader.gate = loader.gate, None  # the thread loading a already waits on its own gate
    rm.load("b")
    assert [r.model for r in rm.snapshot()] == ["b"] and rm.used_bytes == 800
    gate.set()
    t.join(BACKSTOP_S)
    assert result["value"] is loader.engines["a"][0]


def test_unload_refuses_a_model_in_use_unless_forced(clock: FakeClock) -> None:
    rm, loader = make(clock)
    assert rm.unload("a") is False
    engine = rm.acquire("a")
    with pytest.raises(Conflict, match="in use by 1"):
        rm.unload("a")
    assert rm.unload("a", force=True) is True
    assert engine.closed and rm.snapshot() == [] and rm.used_bytes == 0
    again = rm.acquire("a")  # reloaded while the old holder is still out
    rm.release("a")  # the old holder's release is absorbed; counts still balance
    rm.release("a")
    assert again is not engine and rm.snapshot()[0].refcount == 0


def test_close_unloads_everything(clock: FakeClock) -> None:
    rm, loader = make(clock)
    rm.load("a")
    rm.acquire("b")
    rm.close()
    assert rm.snapshot() == [] and rm.used_bytes == 0
    assert all(e.closed for es in loader.engines.values() for e in es)
    rm.release("b")  # a holder finishing after shutdown is harmless


def test_a_failing_close_does_not_fail_the_load_that_evicted(clock: FakeClock) -> None:
    rm, loader = make(clock, budget=500)
    rm.load("a")

    def broken_close() -> None:
        raise OSError("device gone")

    loader.engines["a"][0].close = broken_close  # type: ignore[method-assign]
    assert rm.acquire("b") is loader.engines["b"][0]
    assert rm.used_bytes == 400


def test_bad_budget_is_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        make(clock, budget=0)


def test_many_threads_never_see_a_closed_engine_or_an_overdrawn_budget(clock: FakeClock) -> None:
    rm, loader = make(clock, budget=900)  # room for two of a, b, c at a time
    errors: list[str] = []

    def worker(seed: int) -> None:
        for i in range(30):
            model = "abc"[(seed + i) % 3]
            try:
                engine = rm.acquire(model, timeout=BACKSTOP_S)
            except WontFit as exc:  # pragma: no cover - would mean a lost wake-up
                errors.append(exc.message)
                continue
            if engine.closed:  # type: ignore[attr-defined]
                errors.append(f"{model} handed out closed")
            if rm.used_bytes > 900:
                errors.append(f"budget overdrawn: {rm.used_bytes}")
            rm.release(model)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BACKSTOP_S)
    assert errors == []
    assert all(r.refcount == 0 for r in rm.snapshot()) and rm.used_bytes <= 900
    assert len(loader.calls) > 3  # models really were evicted and reloaded under contention


def test_an_evicted_engine_counts_until_its_close_returns(clock: FakeClock) -> None:
    rm, loader = make(clock, budget=500)
    rm.load("a")
    engine_a = loader.engines["a"][0]
    closing = threading.Event()
    may_close = threading.Event()

    def slow_close() -> None:
        closing.set()
        assert may_close.wait(BACKSTOP_S)
        FakeEngine.close(engine_a)

    engine_a.close = slow_close  # type: ignore[method-assign]
    t, result = in_thread(lambda: rm.acquire("b"))
    assert closing.wait(BACKSTOP_S)
    # a's memory is not free yet, and b has not started loading: counted once, not twice.
    assert rm.used_bytes == 400 and loader.calls == ["a"] and not rm.is_loaded("a")
    may_close.set()
    t.join(BACKSTOP_S)
    assert result["value"] is loader.engines["b"][0] and rm.used_bytes == 400
