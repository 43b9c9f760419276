"""A lost engine (its cluster node died): requests that streamed nothing are retried on an engine
placed on a node still alive; those that had streamed end with the error; nothing hangs.
Fake engines on fake nodes: this is the worker's and the pool's logic (tests/cluster has the real one)."""

from __future__ import annotations

import threading

from llmos.engines.base import FakeEngine
from llmos.engines.types import RequestStatus, SamplingParams, SequenceSpec, StepOutput
from llmos.errors import EngineLost
from llmos.kernel.devices import NODE, Device
from llmos.kernel.pool import DevicePool
from llmos.kernel.request import Request
from llmos.kernel.scheduler import Scheduler
from llmos.kernel.worker import ModelWorker
from tests.waiting import wait_until

NODES = [Device("node-a", NODE, "a", 10**9, 10**9), Device("node-b", NODE, "b", 10**9, 10**9)]


class NodeEngine(FakeEngine):
    """A fake engine whose node can die: every call then raises EngineLost."""

    def __init__(self, name: str, node: str, dead: set[str]) -> None:
        super().__init__(name)
        self.node, self._dead = node, dead
        self.gate = threading.Event()  # decode waits here, so the test can kill the node mid-stream
        self.gate.set()

    def alive(self) -> bool:
        return self.node not in self._dead

    def _check(self) -> None:
        if not self.alive():
            raise EngineLost(f"the engine of {self.name} on node {self.node} is gone", node=self.node)

    def prefill(self, seqs: list[SequenceSpec]) -> list[StepOutput]:
        self._check()
        return super().prefill(seqs)

    def decode(self, ids: list[str]) -> list[StepOutput]:
        self.gate.wait()
        self._check()
        return super().decode(ids)


def setup() -> tuple[ModelWorker, list[NodeEngine], set[str], dict[str, list[object]]]:
    dead: set[str] = set()
    engines: list[NodeEngine] = []

    def load(model: str, device: Device) -> NodeEngine:
        engines.append(NodeEngine(model, device.id, dead))
        return engines[-1]

    pool = DevicePool(NODES, {"node-a": 10**6, "node-b": 10**6}, loader=load, estimate=lambda m: 1000,
                      can_run=lambda m, d: d.id not in dead)
    got: dict[str, list[object]] = {}
    worker = ModelWorker("m", Scheduler("fcfs", max_batch=4), pool, lambda rid, item: got.setdefault(rid, []).append(item),
                         lambda name: name)
    return worker, engines, dead, got


def request(rid: str, max_tokens: int) -> Request:
    return Request(id=rid, tenant="t", model="m", prompt_ids=[1, 2], params=SamplingParams(max_tokens=max_tokens))


def ended(got: dict[str, list[object]], rid: str) -> Request | None:
    return next((i for i in got.get(rid, []) if isinstance(i, Request)), None)


def test_requests_that_streamed_nothing_are_retried_on_a_node_still_alive() -> None:
    worker, engines, dead, got = setup()
    try:
        worker.submit(request("warm", 1))
        wait_until(lambda: ended(got, "warm"), "the first engine loaded and used")
        assert engines[0].node == "node-a"
        dead.add("node-a")  # the node dies while idle: the next request's prefill finds it gone
        worker.submit(request("r1", 3))
        final = wait_until(lambda: ended(got, "r1"), "r1 finished")
        assert final.status == RequestStatus.FINISHED_LENGTH and final.output_ids == [1, 2, 3]
        assert [e.node for e in engines] == ["node-a", "node-b"]  # placed again, on the node alive
        assert worker.resources.device_of("m") == "node-b" and not engines[1].closed
    finally:
        worker.stop()


def test_a_request_that_had_streamed_ends_with_the_error_and_frees_its_slot() -> None:
    worker, engines, dead, got = setup()
    try:
        worker.submit(request("warm", 1))
        wait_until(lambda: ended(got, "warm"), "the first engine loaded")
        engines[0].gate.clear()
        worker.submit(request("r2", 5))
        wait_until(lambda: got.get("r2"), "r2's first token")  # prefill streamed one token; decode waits
        dead.add("node-a")
        engines[0].gate.set()
        final = wait_until(lambda: ended(got, "r2"), "r2 ended")
        assert final.status == RequestStatus.FINISHED_ERROR and "on node node-a is gone" in (final.error or "")
        worker.submit(request("r3", 2))  # the next one runs on a new engine on node-b
        assert wait_until(lambda: ended(got, "r3"), "r3 finished").status == RequestStatus.FINISHED_LENGTH
        assert engines[-1].node == "node-b" and worker.scheduler.running == []
    finally:
        worker.stop()
