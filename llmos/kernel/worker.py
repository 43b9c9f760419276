"""One thread per base model: the step loop that feeds the scheduler's batches to the engine.

The worker is the only thread that calls its engine. Generation runs as iteration-level batches
(``Scheduler.step``); one-off engine calls (embeddings, classification, tagging) run between steps.
The worker holds a reference on its engine while it has work, so the resource manager never evicts
a model in use, and drops it when idle so keep-alive and LRU eviction can take over.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from llmos.engines.base import Engine
from llmos.errors import EngineLost, QueueFull
from llmos.kernel.request import Request
from llmos.engines.types import StepOutput
from llmos.kernel.resources import ResourceManager
from llmos.kernel.scheduler import Scheduler

log = logging.getLogger("llmos.kernel")

Deliver = Callable[[str, StepOutput | Request], None]  # req id, token or final request
AdapterPath = Callable[[str], str]


class ModelWorker:
    def __init__(self, model: str, scheduler: Scheduler, resources: ResourceManager, deliver: Deliver,
                 adapter_path: AdapterPath) -> None:
        self.model = model
        self.scheduler = scheduler
        self.resources = resources
        self.deliver = deliver
        self.adapter_path = adapter_path
        self._calls: deque[tuple[Callable[[Engine], Any], Future[Any]]] = deque()
        self._background: set[int] = set()  # ids of the futures of queued or running background calls
        self._wake = threading.Condition()
        self._stopped = False
        self._engine: Engine | None = None
        self._adapters: set[str] = set()
        self._in_call = 0
        self.thread = threading.Thread(target=self._run, name=f"worker-{model}", daemon=True)
        self.thread.start()

    # -- called from other threads ---------------------------------------------------------------
    def submit(self, req: Request) -> None:
        self.scheduler.add(req)  # raises QueueFull
        self._notify()

    def call(self, fn: Callable[[Engine], Any], *, background: bool = False) -> Future[Any]:
        """Queue one engine call; like generation, at most ``max_queue`` may wait (QueueFull -> 503),
        so a flood of embed / classify / tag calls cannot grow memory and latency without bound.
        A ``background`` call (batch work) is not counted as interactive load."""
        fut: Future[Any] = Future()
        if background:
            self._background.add(id(fut))
            fut.add_done_callback(lambda f: self._background.discard(id(f)))
        with self._wake:
            limit = self.scheduler.max_queue
            if len(self._calls) >= limit:
                raise QueueFull(f"model {self.model!r} has {len(self._calls)} calls waiting (limit {limit}); "
                                "retry in about 1s", retry_after=1.0, waiting=len(self._calls), max_queue=limit)
            self._calls.append((fn, fut))
            self._wake.notify()
        return fut

    def cancel(self, req_id: str) -> None:
        if self.scheduler.cancel(req_id) is not None:
            self._notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self.thread.join(timeout=30)

    @property
    def busy(self) -> bool:
        return self.scheduler.has_work() or bool(self._calls)

    @property
    def pending_calls(self) -> int:
        """One-off engine calls queued or running."""
        return len(self._calls) + self._in_call

    @property
    def interactive_calls(self) -> int:
        """``pending_calls`` less background ones."""
        return max(0, self.pending_calls - len(self._background))

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify()

    # -- the loop ----------------------------------------------------------------------------------
    def _ready(self) -> bool:
        """Whether the loop has something to do now. A streaming engine runs its sequences itself, so
        its worker acts only to admit waiting requests into free slots (or to run one-off calls)."""
        if self._calls:
            return True
        if self._engine is not None and not self._engine.alive():
            return True  # its node died: retry or end what it was running, and place the model again
        if self._engine is not None and self._engine.streams:
            return self.scheduler.can_admit()
        return self.scheduler.has_work()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and not self._ready():
                    self._release_cancelled()
                    if not self.busy:
                        self._drop_engine()
                    self._wake.wait(timeout=1.0)
                if self._stopped:
                    break
            try:
                self._iteration()
            except Exception:  # noqa: BLE001 - the loop must survive anything a step throws
                log.exception("worker %s: step failed", self.model)
        self._shutdown()

    def _iteration(self) -> None:
        engine = self._ensure_engine()
        if engine is None:
            return
        if not engine.alive():
            self._lose_engine()
            return
        self._run_calls(engine)
        self._release_cancelled()
        if engine.streams:
            self._admit(engine)
            return
        batch = self.scheduler.step()
        if batch is not None:
            self._step(engine, batch.prefill, batch.decode)

    def _ensure_engine(self) -> Engine | None:
        if self._engine is not None:
            return self._engine
        try:
            self._engine = self.resources.acquire(self.model)
            self._adapters = set()
            return self._engine
        except Exception as exc:  # noqa: BLE001 - a failed load fails its waiters, not the kernel
            message = f"model {self.model} failed to load: {getattr(exc, 'message', exc)}"
            log.error(message)
            self._fail_everything(exc, message)
            return None

    def _fail_everything(self, exc: Exception, message: str) -> None:
        for req in self.scheduler.fail_all(message):
            self.deliver(req.id, req)
        while self._calls:
            _, fut = self._calls.popleft()
            fut.set_exception(exc)

    def _release_cancelled(self) -> None:
        ids = self.scheduler.drain_cancelled()
        if ids and self._engine is not None:
            self._engine.release(ids)

    def _lose_engine(self) -> None:
        """The engine's node died: requests that streamed nothing go back to the queue, the others end
        with the error; unload the engine (its memory is gone with it) so the next acquire places the
        model again, on a device that is still there."""
        log.warning("worker %s: its engine was lost; placing the model again", self.model)
        running = [r.id for r in self.scheduler.running]
        retried = {r.id for r in self.scheduler.requeue(running)}
        for req in self.scheduler.fail([i for i in running if i not in retried],
                                       f"the engine of {self.model} was lost (its node died) mid-stream"):
            self.deliver(req.id, req)
        self._engine = None
        try:
            self.resources.unload(self.model, force=True)
        finally:
            self.resources.release(self.model)  # absorbed: the forced unload took our reference over

    def _drop_engine(self) -> None:
        if self._engine is not None:
            self._engine = None
            self.resources.release(self.model)

    def _run_calls(self, engine: Engine) -> None:
        while self._calls:
            fn, fut = self._calls.popleft()
            if fut.set_running_or_notify_cancel():
                self._in_call = 1
                try:
                    fut.set_result(fn(engine))
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    fut.set_exception(exc)
                finally:
                    self._in_call = 0

    def _step(self, engine: Engine, prefill: list[Request], decode: list[Request]) -> None:
        outputs: list[StepOutput] = []
        prefill = self._with_adapters(engine, prefill)
        for reqs, run in ((prefill, lambda: engine.prefill([r.spec() for r in prefill])),
                          (decode, lambda: engine.decode([r.id for r in decode]))):
            if not reqs:
                continue
            try:
                outputs += run()
            except EngineLost as exc:  # nothing streamed yet: another engine starts them afresh
                retried = {r.id for r in self.scheduler.requeue([r.id for r in reqs])}
                self._fail(engine, [r.id for r in reqs if r.id not in retried], exc.message)
            except Exception as exc:  # noqa: BLE001 - the engine failed these requests only
                log.exception("worker %s: engine step failed", self.model)
                self._fail(engine, [r.id for r in reqs], f"engine error: {exc}")
        finished = self.scheduler.update(outputs)
        for out in outputs:
            self.deliver(out.id, out)
        engine.release([r.id for r in finished])
        for req in finished:
            self.deliver(req.id, req)

    def _admit(self, engine: Engine) -> None:
        """Streaming engine: start the requests the scheduler admits; their tokens come back through
        ``_on_output`` on the engine's threads."""
        if not self.scheduler.can_admit():
            return
        batch = self.scheduler.step()
        if batch is None or not batch.prefill:
            return
        admitted = self._with_adapters(engine, batch.prefill)
        if not admitted:
            return
        try:
            engine.start([r.spec() for r in admitted], self._on_output)
        except EngineLost as exc:  # nothing streamed yet: another engine starts them afresh
            retried = {r.id for r in self.scheduler.requeue([r.id for r in admitted])}
            self._fail(engine, [r.id for r in admitted if r.id not in retried], exc.message)
        except Exception as exc:  # noqa: BLE001 - the engine refused these requests only
            log.exception("worker %s: engine start failed", self.model)
            self._fail(engine, [r.id for r in admitted], f"engine error: {exc}")

    def _on_output(self, out: StepOutput) -> None:
        finished = self.scheduler.update([out])
        self.deliver(out.id, out)
        for req in finished:
            self.deliver(req.id, req)
        if finished:
            self._notify()  # a slot is free: admit the next waiting request

    def _with_adapters(self, engine: Engine, reqs: list[Request]) -> list[Request]:
        ok = []
        for req in reqs:
            if req.adapter and req.adapter not in self._adapters:
                try:
                    engine.add_adapter(req.adapter, self.adapter_path(req.adapter))
                    self._adapters.add(req.adapter)
                except Exception as exc:  # noqa: BLE001
                    self._fail(engine, [req.id], f"adapter {req.adapter} failed to load: {exc}")
                    continue
            ok.append(req)
        return ok

    def _fail(self, engine: Engine, ids: list[str], message: str) -> None:
        engine.release(ids)
        for req in self.scheduler.fail(ids, message):
            self.deliver(req.id, req)

    def _shutdown(self) -> None:
        for req in self.scheduler.fail_all("the daemon is shutting down"):
            self.deliver(req.id, req)
        self._drop_engine()

