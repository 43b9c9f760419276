"""Queue policies: order of admission, cancellation, inspection, the registry."""

from __future__ import annotations

import pytest

from llmos.errors import ConfigError
from llmos.kernel.queue import (FairPolicy, FcfsPolicy, PriorityPolicy, QueuePolicy, make_policy,
                                policy_names, register_policy)
from llmos.kernel.request import Request


def req(name: str, *, tenant: str = "default", priority: int = 0) -> Request:
    return Request(model="m", prompt_ids=[1], id=name, tenant=tenant, priority=priority)


def drain(policy: QueuePolicy) -> list[str]:
    out = []
    while (r := policy.pop()) is not None:
        out.append(r.id)
    return out


def test_builtins_are_registered_by_name() -> None:
    assert {"fcfs", "priority", "fair"} <= set(policy_names())
    assert isinstance(make_policy("fcfs"), FcfsPolicy)
    assert isinstance(make_policy("priority"), PriorityPolicy)
    assert isinstance(make_policy("fair"), FairPolicy)
    assert make_policy("fcfs") is not make_policy("fcfs")  # a fresh queue each time


def test_unknown_policy_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown queue policy 'lifo'.*fair, fcfs, priority"):
        make_policy("lifo")


def test_register_a_custom_policy() -> None:
    class Lifo(FcfsPolicy):
        name = "lifo-test"

        def pop(self) -> Request | None:
            return self._queue.popitem(last=True)[1] if self._queue else None

    register_policy("lifo-test", Lifo)
    q = make_policy("lifo-test")
    for n in "abc":
        q.push(req(n))
    assert drain(q) == ["c", "b", "a"]
    with pytest.raises(TypeError):
        register_policy("bad", dict)  # type: ignore[arg-type]


def test_fcfs_keeps_arrival_order() -> None:
    q = make_policy("fcfs")
    for n in ["a", "b", "c", "d"]:
        q.push(req(n, priority=ord(n)))  # priority is ignored here
    assert [r.id for r in q] == ["a", "b", "c", "d"]
    assert q.peek().id == "a" and len(q) == 4  # inspecting changes nothing
    assert drain(q) == ["a", "b", "c", "d"]
    assert q.pop() is None


def test_priority_high_first_fifo_within() -> None:
    q = make_policy("priority")
    for name, prio in [("lo1", 0), ("hi1", 5), ("lo2", 0), ("mid", 2), ("hi2", 5), ("neg", -1)]:
        q.push(req(name, priority=prio))
    expected = ["hi1", "hi2", "mid", "lo1", "lo2", "neg"]
    assert [r.id for r in q] == expected
    assert drain(q) == expected


def test_priority_late_high_request_overtakes() -> None:
    q = make_policy("priority")
    q.push(req("a"))
    q.push(req("b"))
    assert q.pop().id == "a"
    q.push(req("urgent", priority=9))
    assert drain(q) == ["urgent", "b"]


def test_fair_interleaves_a_small_tenant_with_a_big_one() -> None:
    q = make_policy("fair")
    for i in range(20):
        q.push(req(f"A{i}", tenant="A"))
    q.push(req("B0", tenant="B"))
    q.push(req("B1", tenant="B"))
    order = drain(q)
    assert order[:4] == ["A0", "B0", "A1", "B1"]
    assert order[4:] == [f"A{i}" for i in range(2, 20)]  # FIFO within a tenant


def test_fair_iteration_predicts_pop_order() -> None:
    q = make_policy("fair")
    for name, tenant in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c"), ("c2", "c")]:
        q.push(req(name, tenant=tenant))
    assert q.pop().id == "a1"
    predicted = [r.id for r in q]
    assert predicted == ["b1", "c1", "a2", "c2", "a3"]
    assert drain(q) == predicted


def test_fair_new_tenant_joins_at_the_back_and_gets_a_turn_before_repeats() -> None:
    q = make_policy("fair")
    for i in range(3):
        q.push(req(f"a{i}", tenant="a"))
    assert q.pop().id == "a0"
    q.push(req("b0", tenant="b"))
    assert drain(q) == ["a1", "b0", "a2"]


def test_fair_tenant_that_empties_and_returns_gains_no_extra_turn() -> None:
    q: FairPolicy = make_policy("fair")  # type: ignore[assignment]
    q.push(req("a0", tenant="a"))
    q.push(req("b0", tenant="b"))
    q.push(req("b1", tenant="b"))
    assert q.pop().id == "a0"  # a's queue is now empty: a leaves the rotation
    q.push(req("a1", tenant="a"))  # ...and rejoins behind b
    assert q.tenants() == {"b": 2, "a": 1}
    assert drain(q) == ["b0", "a1", "b1"]


@pytest.mark.parametrize("name", ["fcfs", "priority", "fair"])
def test_remove_cancels_anywhere_in_the_queue(name: str) -> None:
    q = make_policy(name)
    for i, tenant in enumerate(["x", "y", "x", "y"]):
        q.push(req(f"r{i}", tenant=tenant, priority=i % 2))
    assert "r2" in q
    removed = q.remove("r2")
    assert removed is not None and removed.id == "r2"
    assert "r2" not in q and len(q) == 3
    assert q.remove("r2") is None and q.remove("nope") is None
    assert sorted(drain(q)) == ["r0", "r1", "r3"]
    assert len(q) == 0 and list(q) == [] and q.peek() is None


@pytest.mark.parametrize("name", ["fcfs", "priority", "fair"])
def test_duplicate_id_is_refused(name: str) -> None:
    q = make_policy(name)
    q.push(req("same"))
    with pytest.raises(ValueError, match="already queued"):
        q.push(req("same"))
    assert len(q) == 1


def test_fair_remove_last_request_of_a_tenant_drops_it_from_the_rotation() -> None:
    q: FairPolicy = make_policy("fair")  # type: ignore[assignment]
    q.push(req("a0", tenant="a"))
    q.push(req("b0", tenant="b"))
    q.remove("a0")
    assert q.tenants() == {"b": 1}
    assert drain(q) == ["b0"]
