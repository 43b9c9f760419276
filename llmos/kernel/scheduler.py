"""The scheduler: iteration-level (continuous) batching for one engine.

One scheduler serves one loaded base model; requests for that model's LoRA adapters share it, so
they decode in one forward pass. It is pure bookkeeping: it never touches tensors or engines. The
kernel thread that owns the engine drives it::

    batch = sched.step()                       # who runs this iteration (None: sleep until add)
    outs = engine.prefill(batch.prefill_specs()) + engine.decode(batch.decode_ids())  # skip empty lists
    done = sched.update(outs)                  # apply tokens; finished requests leave at once
    engine.release([r.id for r in done] + sched.drain_cancelled())

Because admission happens at every step, a request that arrives while others decode joins the batch
at the next iteration instead of waiting for the whole batch to finish, and a finished request's slot
is reused one step later.

Every method is thread-safe: API threads ``add`` and ``cancel`` while the kernel thread steps.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from llmos.errors import Conflict, QueueFull
from llmos.kernel.queue import QueuePolicy, make_policy
from llmos.kernel.request import Request
from llmos.engines.types import RequestStatus, SequenceSpec, StepOutput

Clock = Callable[[], float]

DEFAULT_RETRY_AFTER = 1.0  # seconds, when no throughput has been measured yet
MIN_RETRY_AFTER = 0.1
MAX_RETRY_AFTER = 60.0  # beyond this a client is better told to go elsewhere than to wait
RATE_WINDOW_S = 10.0
TTFT_SAMPLES = 256  # recent time-to-first-token values kept for the co-scheduler's latency check


@dataclass
class Batch:
    """One iteration's work: new sequences to prefill and running ones to decode one more token."""

    prefill: list[Request] = field(default_factory=list)
    decode: list[Request] = field(default_factory=list)

    def prefill_specs(self) -> list[SequenceSpec]:
        return [r.spec() for r in self.prefill]

    def decode_ids(self) -> list[str]:
        return [r.id for r in self.decode]

    def __len__(self) -> int:
        return len(self.prefill) + len(self.decode)


@dataclass
class SchedulerStats:
    """A consistent point-in-time view for ``llmos ps`` and the metrics exporter."""

    policy: str
    waiting: int
    running: int
    max_queue: int
    max_batch: int
    admitted: int  # ever moved from waiting to running
    finished: int  # ever reached a finished status, whichever way (includes the two below)
    aborted: int  # cancelled, waiting or running
    errored: int  # failed by the engine or by ``fail``
    rejected: int  # turned away with QueueFull
    tokens_generated: int
    tokens_per_s: float  # recent output rate; 0.0 when idle or not yet measured
    retry_after: float  # what a client turned away now would be told


class RateMeter:
    """Recent event rates over a sliding window of (time, tokens, finished) samples."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int, int]] = deque()

    def record(self, now: float, tokens: int, finished: int) -> None:
        self._samples.append((now, tokens, finished))
        self._prune(now)

    def _prune(self, now: float) -> None:
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()

    def rates(self, now: float) -> tuple[float, float] | None:
        """(tokens/s, finished/s), or None when the window holds too little to tell.

        The first sample only marks when the window starts: its counts were produced over an
        unknown span before it, so counting them would overstate the rate.
        """
        self._prune(now)
        if len(self._samples) < 2:
            return None
        span = now - self._samples[0][0]
        if span <= 0:
            return None
        tokens = sum(s[1] for s in list(self._samples)[1:])
        finished = sum(s[2] for s in list(self._samples)[1:])
        return tokens / span, finished / span


class Scheduler:
    """Queue + running set for one engine; see the module docstring for the driving loop."""

    def __init__(
        self,
        policy: str = "fcfs",
        *,
        max_queue: int = 64,
        max_batch: int = 16,
        max_prefill_tokens: int | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if max_queue < 1 or max_batch < 1:
            raise ValueError(f"max_queue and max_batch must be >= 1 (got {max_queue}, {max_batch})")
        self.policy_name = policy
        self.max_queue = max_queue
        self.max_batch = max_batch
        # Prompt tokens admitted per step. Smaller prefill groups waste less compute on padding and let
        # the first requests of a burst stream while later ones wait a step (lower median TTFT).
        self.max_prefill_tokens = max_prefill_tokens
        # Timestamps written onto requests come from this clock, so it must be the one that set
        # Request.arrived (time.monotonic by default) for time-to-first-token to mean anything.
        self._clock = clock
        self._queue: QueuePolicy = make_policy(policy)
        self._running: dict[str, Request] = {}  # insertion order = admission order
        self._cancelled: list[str] = []
        self._lock = threading.Lock()
        self._meter = RateMeter()
        self._ttfts: deque[tuple[float, float]] = deque(maxlen=TTFT_SAMPLES)  # (when, seconds)
        self._counts = dict(admitted=0, finished=0, aborted=0, errored=0, rejected=0, tokens=0)

    # -- intake -----------------------------------------------------------------------------------
    def add(self, req: Request) -> None:
        """Queue ``req``; raise ``QueueFull`` once ``max_queue`` requests are already waiting."""
        if req.status != RequestStatus.WAITING:
            raise ValueError(f"request {req.id} is {req.status.name}, only WAITING requests can be added")
        with self._lock:
            if req.id in self._running or req.id in self._queue:
                raise Conflict(f"request id {req.id} is already scheduled")
            if len(self._queue) >= self.max_queue:
                self._counts["rejected"] += 1
                retry = self._retry_after()
                raise QueueFull(
                    f"model {req.model!r} has {len(self._queue)} requests waiting (limit {self.max_queue}); "
                    f"retry in about {retry:.1f}s",
                    retry_after=retry,
                    waiting=len(self._queue),
                    max_queue=self.max_queue,
                )
            self._queue.push(req)

    # -- the step loop ----------------------------------------------------------------------------
    def step(self) -> Batch | None:
        """Admit waiting requests into free slots (policy order); None when there is nothing to run."""
        with self._lock:
            decode = list(self._running.values())
            prefill: list[Request] = []
            budget = self.max_prefill_tokens
            while len(self._running) < self.max_batch:
                head = self._queue.peek()
                if head is None or (budget is not None and prefill and len(head.prompt_ids) > budget):
                    break
                if budget is not None:
                    budget -= len(head.prompt_ids)
                req = self._queue.pop()
                if req is None:
                    break
                req.status = RequestStatus.RUNNING
                self._running[req.id] = req
                prefill.append(req)
            self._counts["admitted"] += len(prefill)
            return Batch(prefill, decode) if prefill or decode else None

    def update(self, outputs: list[StepOutput]) -> list[Request]:
        """Apply one step's tokens; return the requests that finished (already out of the running set).

        Outputs for ids that are not running (unknown, or cancelled while the engine worked) are
        ignored.
        """
        with self._lock:
            now = self._clock()
            done: list[Request] = []
            applied = 0
            for out in outputs:
                req = self._running.get(out.id)
                if req is None:
                    continue
                applied += out.tokens
                if self._apply(req, out, now):
                    del self._running[req.id]
                    done.append(req)
            self._counts["tokens"] += applied
            self._meter.record(now, applied, len(done))
            return done

    def _apply(self, req: Request, out: StepOutput, now: float) -> bool:
        """Append the output's token(s) to ``req``; True when this output ends it."""
        req.output_ids.extend([out.token_id] * out.tokens)
        req.output_text += out.text
        if req.first_token_at is None and out.tokens:
            req.first_token_at = now
            if not req.background:
                self._ttfts.append((now, now - req.arrived))
        if out.finished or out.status.finished:
            status = out.status if out.status.finished else RequestStatus.FINISHED_STOPPED
            self._finish(req, status, out.error, now)
            return True
        # The engine owns stopping, but a slot must never be held past max_tokens by a faulty one.
        if len(req.output_ids) >= req.params.max_tokens:
            self._finish(req, RequestStatus.FINISHED_LENGTH, None, now)
            return True
        return False

    def _finish(self, req: Request, status: RequestStatus, error: str | None, now: float) -> None:
        req.status = status
        req.finished_at = now
        if error is not None:
            req.error = error
        self._counts["finished"] += 1
        if status == RequestStatus.FINISHED_ABORTED:
            self._counts["aborted"] += 1
        elif status == RequestStatus.FINISHED_ERROR:
            self._counts["errored"] += 1

    # -- ending requests from outside -------------------------------------------------------------
    def cancel(self, req_id: str) -> Request | None:
        """Abort a waiting or running request; None when it is unknown or already finished.

        A running one leaves the running set at once and its id is queued for
        ``drain_cancelled`` so the driving thread can free its engine state.
        """
        with self._lock:
            req = self._queue.remove(req_id)
            if req is None:
                req = self._running.pop(req_id, None)
                if req is None:
                    return None
                self._cancelled.append(req_id)
            self._finish(req, RequestStatus.FINISHED_ABORTED, None, self._clock())
            return req

    def drain_cancelled(self) -> list[str]:
        """Ids of running requests cancelled since the last call: pass them to ``engine.release``."""
        with self._lock:
            ids, self._cancelled = self._cancelled, []
            return ids

    def fail(self, req_ids: Iterable[str], error: str) -> list[Request]:
        """Mark waiting or running requests FINISHED_ERROR (e.g. their model failed to load).

        Returns the ones that were found; the caller releases any that reached the engine.
        """
        with self._lock:
            now = self._clock()
            failed = []
            for req_id in req_ids:
                req = self._queue.remove(req_id) or self._running.pop(req_id, None)
                if req is not None:
                    self._finish(req, RequestStatus.FINISHED_ERROR, error, now)
                    failed.append(req)
            return failed

    def requeue(self, req_ids: Iterable[str]) -> list[Request]:
        """Put running requests that have produced nothing yet back in the queue (their engine was lost
        before the first token: another one can start them afresh). Returns the ones requeued."""
        with self._lock:
            back = []
            for req_id in req_ids:
                req = self._running.get(req_id)
                if req is not None and not req.output_ids:
                    del self._running[req_id]
                    req.status = RequestStatus.WAITING
                    self._queue.push(req)
                    back.append(req)
            return back

    def fail_all(self, error: str) -> list[Request]:
        """Fail every waiting and running request: the engine is gone."""
        with self._lock:
            ids = [r.id for r in self._queue] + list(self._running)
        return self.fail(ids, error)

    # -- introspection ----------------------------------------------------------------------------
    @property
    def waiting(self) -> list[Request]:
        """Waiting requests in the order they would be admitted."""
        with self._lock:
            return list(self._queue)

    @property
    def running(self) -> list[Request]:
        """Running requests in admission order."""
        with self._lock:
            return list(self._running.values())

    def get(self, req_id: str) -> Request | None:
        with self._lock:
            if req_id in self._running:
                return self._running[req_id]
            return next((r for r in self._queue if r.id == req_id), None)

    def recent_ttfts(self, window_s: float) -> list[float]:
        """Times to first token (seconds) of requests whose first token came in the last ``window_s``."""
        with self._lock:
            since = self._clock() - window_s
            return [ttft for at, ttft in self._ttfts if at >= since]

    def can_admit(self) -> bool:
        """Whether ``step`` would admit a waiting request now (one waits and a slot is free)."""
        with self._lock:
            return len(self._queue) > 0 and len(self._running) < self.max_batch

    def has_work(self) -> bool:
        with self._lock:
            return bool(self._running) or len(self._queue) > 0

    def stats(self) -> SchedulerStats:
        with self._lock:
            rates = self._meter.rates(self._clock())
            c = self._counts
            return SchedulerStats(
                policy=self.policy_name,
                waiting=len(self._queue),
                running=len(self._running),
                max_queue=self.max_queue,
                max_batch=self.max_batch,
                admitted=c["admitted"],
                finished=c["finished"],
                aborted=c["aborted"],
                errored=c["errored"],
                rejected=c["rejected"],
                tokens_generated=c["tokens"],
                tokens_per_s=rates[0] if rates else 0.0,
                retry_after=self._retry_after(),
            )

    def _retry_after(self) -> float:
        """Seconds until a queue place is likely to free up (lock held).

        A place frees when a waiting request is admitted, which happens when a running one
        finishes. The recent completion rate answers that directly; before any request has
        finished in the window, the nearest max_tokens limit at the recent per-sequence token rate
        bounds it; with no measurements at all, a default.
        """
        rates = self._meter.rates(self._clock())
        if rates is None:
            return DEFAULT_RETRY_AFTER
        tokens_per_s, finished_per_s = rates
        if finished_per_s > 0:
            estimate = 1.0 / finished_per_s
        elif tokens_per_s > 0 and self._running:
            per_sequence = tokens_per_s / len(self._running)
            left = min(max(r.params.max_tokens - len(r.output_ids), 1) for r in self._running.values())
            estimate = left / per_sequence
        else:
            return DEFAULT_RETRY_AFTER
        return min(max(estimate, MIN_RETRY_AFTER), MAX_RETRY_AFTER)
