"""Co-scheduling: background jobs yield the machine to interactive requests, and still finish.

Jobs (fine-tuning runners) and requests share the same cores and memory budget. The daemon runs one
``CoScheduler``; every ``interval`` seconds, and at once when the kernel is handed a request or an
engine call (``Kernel.on_work``), it samples the kernel's interactive load (``Kernel.activity``) and
steers the ``JobRunner``:

* **Traffic.** Under ``cosched_priority = "traffic"`` any queued or running request, one-off engine
  call or model load pauses every running job in place: with ``cosched_freeze`` (default) the OS
  stops its runner outright within milliseconds, wherever it is (``kernel/freeze.py``: SIGSTOP between
  two of its database sessions, SIGCONT to resume); without, at its next pause point (a step
  boundary). Either way no checkpoint is written, the model stays in the runner's memory and resuming
  costs nothing; under
  ``"balanced"`` only requests waiting for a batch slot, or a recent p95 time-to-first-token above
  ``ttft_target_ms``, do; under ``"job"`` traffic never pauses a job. Jobs resume once the load has
  been gone for ``cosched_resume_after_s`` (hysteresis: a gap between two requests of one
  conversation does not restart training for a single step).
* **Minimum share.** Jobs are guaranteed ``cosched_min_share`` of wall time over
  ``cosched_window_s`` while they have a runner: under constant traffic the co-scheduler lets them
  run in slices (until their share reaches 1.5x the minimum), so a job always finishes.
* **Memory.** A queued job starts only when its estimate (base model size x ``job_memory_factor``)
  fits in the kernel's budget beside the loaded models; it is reserved with the resource manager
  while the runner lives, so model loads see it; on a machine with GPUs it goes to the first GPU with
  room (the runner sees that GPU alone), else to the host. Otherwise it stays queued with the reason (an event).
  When a model load waits for memory that running jobs hold, they are paused *freeing memory*
  (checkpoint and exit) and requeued once no load is waiting; admission then starts them again when
  they fit.

Every pause and resume is a job event (``control`` + ``state``, reason ``interactive load`` or
``memory for a model``) and is counted in ``stats()``, which the metrics exporter reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from llmos.config import Settings
from llmos.errors import LlmosError
from llmos.kernel.core import Activity, Kernel
from llmos.jobs.runner import JobRunner
from llmos.jobs.types import Control, JobInfo, JobState
from llmos.kernel.resources import _size

log = logging.getLogger("llmos.cosched")

TRAFFIC_REASON = "interactive load"
MEMORY_REASON = "memory for a model"
SHARE_BOOST = 1.5  # a starved job runs until its share reaches this multiple of the minimum
TTFT_WINDOW_S = 10.0  # recent requests whose time to first token the balanced priority checks

Estimate = Callable[[JobInfo], int]


@dataclass
class CoschedStats:
    """Counters since start (monotonic) and the current state, for ``/admin/ps`` and metrics."""

    enabled: bool
    priority: str
    holding: bool  # jobs are held for interactive load now
    pauses: int  # jobs paused for interactive load
    resumes: int  # jobs resumed after it
    share_resumes: int  # holds lifted early to give starved jobs their minimum share
    memory_pauses: int  # jobs paused freeing memory for a model load
    memory_waits: int  # admission refusals (a queued job did not fit)
    held_s: float  # seconds jobs with a runner spent held
    run_share: float | None  # jobs' share of wall time over the window (None: no job ran in it)


class ShareMeter:
    """Seconds jobs were allowed to run vs. seconds they existed, over a sliding window."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float, bool]] = deque()  # (end time, seconds, allowed)

    def add(self, now: float, seconds: float, allowed: bool) -> None:
        self._samples.append((now, seconds, allowed))
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()

    def totals(self) -> tuple[float, float]:
        """(allowed seconds, observed seconds) in the window."""
        observed = sum(s[1] for s in self._samples)
        return sum(s[1] for s in self._samples if s[2]), observed

    def share(self) -> float | None:
        allowed, observed = self.totals()
        return allowed / observed if observed > 0 else None


def base_model_estimate(kernel: Kernel, factor: float) -> Estimate:
    """A job's memory: its spec's ``base`` model size x ``factor``; 0 (no reservation) without one."""

    def estimate(info: JobInfo) -> int:
        base = info.spec.get("base")
        if not isinstance(base, str):
            return 0
        try:
            tenant = info.spec.get("tenant")
            return int(kernel.registry.get(base, tenant=tenant if isinstance(tenant, str) else None)
                       .manifest.size_bytes * factor)
        except LlmosError:
            return 0  # the job itself reports an unknown model, with a better message

    return estimate


class CoScheduler:
    """Owned by the daemon: ``start()`` after ``JobRunner.startup()``, ``stop()`` before its shutdown."""

    def __init__(self, settings: Settings, kernel: Kernel, jobs: JobRunner, *, estimate: Estimate | None = None,
                 clock: Callable[[], float] = time.monotonic, interval: float = 0.05) -> None:
        self.settings = settings
        self.kernel = kernel
        self.jobs = jobs
        self.interval = interval
        self._estimate = estimate or base_model_estimate(kernel, settings.job_memory_factor)
        self._clock = clock
        self._meter = ShareMeter(settings.cosched_window_s)
        self._lock = threading.Lock()
        self._holding = False
        self._memory_held = False
        self._forced = False
        self._last_busy = float("-inf")
        self._last_memory = float("-inf")
        self._last_tick: float | None = None
        self._counts = dict(pauses=0, resumes=0, share_resumes=0, memory_pauses=0)
        self._admit_lock = threading.Lock()
        self._memory_waits = 0
        self._held_s = 0.0
        self._stopping = threading.Event()
        self._woken = threading.Event()
        self._thread: threading.Thread | None = None
        jobs.admission = self
        kernel.on_work = self._woken.set  # a request need not wait for the next sample to stop jobs

    # -- admission (called by the JobRunner, under its lock) -------------------------------------------
    def admit(self, info: JobInfo) -> str | None:
        need = self._estimate(info)
        res = self.kernel.resources
        if need <= 0:
            return None
        where = res.reserve(_key(info.id), need)  # a device id (a GPU first) from a device pool
        if where:
            return None
        with self._admit_lock:  # not self._lock: the runner calls here holding its lock, and tick() holds
            self._memory_waits += 1  # ours while it calls the runner
        if need > res.budget_bytes:
            return (f"needs about {_size(need)} to train but the whole memory budget is {_size(res.budget_bytes)}; "
                    "raise LLMOS_MEMORY_BUDGET or cancel it")
        return (f"needs about {_size(need)} to train; {_size(res.used_bytes)} of the {_size(res.budget_bytes)} "
                "budget is held by loaded models: waits until idle ones unload")

    def released(self, job_id: str) -> None:
        self.kernel.resources.unreserve(_key(job_id))

    def device(self, job_id: str) -> str | None:
        """The device the job's memory is reserved on (its runner trains there); None: not known."""
        reserved_on = getattr(self.kernel.resources, "reserved_on", None)
        return reserved_on(_key(job_id)) if reserved_on is not None else None

    # -- the loop --------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="cosched", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop deciding. Holds stay: the daemon's shutdown comes next and checkpoints every runner
        (lifting them here would only start queued jobs to stop them again); a restart requeues jobs
        paused for load, since their reason is not a person's."""
        self._stopping.set()
        self._woken.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._woken.wait(self.interval)
            self._woken.clear()
            if self._stopping.is_set():
                return
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - one failed sample (a locked database) must not end co-scheduling
                log.exception("co-scheduling pass failed")

    def tick(self) -> None:
        """One decision from the current load (the loop calls it; tests may too)."""
        with self._lock:
            now = self._clock()
            dt = 0.0 if self._last_tick is None else min(now - self._last_tick, 1.0)
            self._last_tick = now
            # Jobs count as present while a runner lives, or while the hold keeps a queued one from
            # starting: a job queued under constant traffic must get its share too.
            present = bool(self.jobs.live()) or (self._holding and self.jobs.has_queued())
            if present:
                self._meter.add(now, dt, not self._holding)
                self._held_s += dt if self._holding else 0.0
            self._memory(now)
            self._set_hold(self._want_hold(now, self.kernel.activity(TTFT_WINDOW_S)))

    def _want_hold(self, now: float, act: Activity) -> bool:
        if not self.settings.cosched:
            return False
        if self._pressure(act):
            self._last_busy = now
        want = now - self._last_busy < self.settings.cosched_resume_after_s
        if not want:
            self._forced = False
            return False
        return not self._starved()

    def _pressure(self, act: Activity) -> bool:
        priority = self.settings.cosched_priority
        if priority == "job":
            return False
        if priority == "traffic":
            return act.busy
        return act.waiting > 0 or act.loading > 0 or _p95(act.ttfts) * 1000 > self.settings.ttft_target_ms

    def _starved(self) -> bool:
        """Whether jobs must run now, traffic or not, to keep their minimum share."""
        floor = self.settings.cosched_min_share
        if floor <= 0:
            return False
        allowed, observed = self._meter.totals()
        share = allowed / observed if observed > 0 else 1.0
        if self._forced:
            self._forced = share < min(1.0, floor * SHARE_BOOST)
        elif observed >= floor * self._meter.window_s and share < floor:
            self._forced = True
            if self._holding:
                self._counts["share_resumes"] += 1
        return self._forced

    def _set_hold(self, hold: bool) -> None:
        if hold == self._holding:
            return
        self._holding = hold
        freeze = self.settings.cosched_freeze
        if hold:
            ids = self.jobs.freeze_all(TRAFFIC_REASON) if freeze else self.jobs.pause_all(TRAFFIC_REASON)
            self._counts["pauses"] += len(ids)
        else:
            ids = self.jobs.thaw_all(TRAFFIC_REASON) if freeze else self.jobs.resume_all(TRAFFIC_REASON)
            self._counts["resumes"] += len(ids)
        if ids:
            log.info("%s jobs %s for %s", "paused" if hold else "resumed", ", ".join(ids), TRAFFIC_REASON)

    # -- memory ----------------------------------------------------------------------------------------
    def _memory(self, now: float) -> None:
        """Free the memory of running jobs for a model load that waits for it; requeue them afterwards."""
        res = self.kernel.resources
        if res.waiting_for_memory > 0 and res.reservations():
            self._last_memory = now
            if not self._memory_held:
                self._memory_held = True
                self._counts["memory_pauses"] += len(self._free_memory())
        elif self._memory_held and now - self._last_memory >= self.settings.cosched_resume_after_s:
            self._release_memory_hold()

    def _free_memory(self) -> list[str]:
        ids = self.jobs.pause_all(MEMORY_REASON, free_memory=True)
        # Jobs already paused in place for traffic still hold their memory: ask them to leave too.
        for info in self.jobs.list(states=[JobState.RUNNING, JobState.PAUSED]):
            if info.pid is not None and info.id not in ids and info.requested < Control.PAUSE_FREE \
                    and info.reason == TRAFFIC_REASON:
                self.jobs.pause(info.id, free_memory=True, reason=MEMORY_REASON)
                ids.append(info.id)
        log.info("jobs %s checkpoint and exit: a model load waits for memory", ", ".join(ids) or "(none)")
        return ids

    def _release_memory_hold(self) -> None:
        if self._memory_held:
            self._memory_held = False
            self.jobs.resume_all(MEMORY_REASON)  # requeued: admission starts them when they fit

    # -- reporting -------------------------------------------------------------------------------------
    def stats(self) -> CoschedStats:
        with self._lock:
            c = self._counts
            return CoschedStats(self.settings.cosched, self.settings.cosched_priority, self._holding, c["pauses"],
                                c["resumes"], c["share_resumes"], c["memory_pauses"], self._memory_waits,
                                round(self._held_s, 3), self._meter.share())


def _key(job_id: str) -> str:
    return f"job {job_id}"


def _p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
