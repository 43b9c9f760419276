"""The resource manager: which models are loaded, within one memory budget.

Models load on demand (``acquire``), stay loaded while anyone holds a reference, linger for a
keep-alive period once idle so the next request skips the load, and are evicted least recently used
first when another model needs the room. A model in use is never evicted: a load that cannot fit
beside busy models waits for one to go idle, up to a timeout.

Accounting uses three kinds of bytes, all counted against the budget:

- loaded: each engine's measured ``footprint()`` after its load (not the estimate);
- loading: the ``estimate`` reserved by a load in flight, so two loads cannot both claim the room;
  while it is still closing the models it evicted, the larger of that and what it is freeing;
- closing: other evicted engines whose ``close()`` has not returned, still holding their memory;
- reserved: memory that background jobs hold outside the kernel (``reserve`` / ``unreserve``), so a
  model load never counts on room a training run is using.

Loaders and ``close()`` run outside the lock (they take seconds), so ``release`` and ``snapshot``
never wait on a load. Every public method is thread-safe.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


from llmos.engines.base import Engine
from llmos.errors import Conflict, WontFit

log = logging.getLogger(__name__)

Clock = Callable[[], float]
FOREVER = math.inf


def _size(n: float) -> str:
    """Bytes for people: ``400 B``, ``5.0 KB``, ``1.20 GB``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}" if unit in ("TB", "GB") else f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


@dataclass
class LoadedModel:
    """One loaded model as ``llmos ps`` shows it."""

    model: str
    footprint: int  # bytes, as measured after loading
    refcount: int  # holders right now; > 0 means it cannot be evicted
    last_used: float  # clock time of the last acquire or release
    loaded_at: float
    keep_alive_s: float  # idle seconds before ``sweep`` unloads it (inf: never)
    device: str = "cpu"  # where it sits (``llmos.kernel.devices``)

    @property
    def expires_at(self) -> float | None:
        """When ``sweep`` may unload it; None while in use or kept forever."""
        if self.refcount > 0 or math.isinf(self.keep_alive_s):
            return None
        return self.last_used + self.keep_alive_s


@dataclass
class _Slot:
    engine: Engine
    footprint: int
    refcount: int
    last_used: float
    loaded_at: float


class _Load:
    """A load in flight: its reservation, and the outcome its waiters read."""

    def __init__(self, reserved: int) -> None:
        self.reserved = reserved
        self.freeing = 0  # bytes of the engines it evicted that are still closing
        self.done = False
        self.error: BaseException | None = None

    @property
    def claimed(self) -> int:
        # Its victims' memory turns into its own once they are closed: count it once, not twice.
        return max(self.reserved, self.freeing)


class ResourceManager:
    """Loads, shares, keeps alive and evicts engines within ``budget_bytes`` of one device."""

    def __init__(
        self,
        budget_bytes: int,
        *,
        loader: Callable[[str], Engine],
        estimate: Callable[[str], int],
        clock: Clock = time.monotonic,
        keep_alive_s: float = 300.0,
        wait_timeout_s: float = 60.0,
        device: str = "cpu",
    ) -> None:
        if budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be positive, got {budget_bytes}")
        _check_keep_alive(keep_alive_s)
        self._budget = budget_bytes
        self._loader = loader
        self._estimate = estimate
        self._clock = clock  # stamps last_used / loaded_at and drives keep-alive
        self.keep_alive_s = keep_alive_s
        self.wait_timeout_s = wait_timeout_s  # real seconds: a blocked thread waits in real time
        self._cond = threading.Condition()
        self._slots: dict[str, _Slot] = {}
        self._loading: dict[str, _Load] = {}
        self._closing_bytes = 0
        self._keep_alive: dict[str, float] = {}
        # References still held on engines that ``unload(force=True)`` closed: their holders'
        # ``release`` calls are absorbed here rather than miscounting a later reload.
        self._orphans: Counter[str] = Counter()
        self._waiting = 0
        self._waiting_room = 0  # of those, threads waiting for memory (not for a load in flight)
        self._reserved: dict[str, int] = {}
        self.device = device  # the device whose memory this budget is (a label for ``ps`` and errors)
        self.loads = 0  # engines loaded since start
        self.evictions = 0  # idle engines pushed out to make room for another

    # -- accounting (lock held) ---------------------------------------------------------------------
    @property
    def budget_bytes(self) -> int:
        return self._budget

    @property
    def used_bytes(self) -> int:
        """Loaded footprints + reservations of loads in flight + engines still closing."""
        with self._cond:
            return self._used()

    @property
    def waiting(self) -> int:
        """Threads blocked in ``acquire`` (on a load in flight or on memory)."""
        with self._cond:
            return self._waiting

    @property
    def waiting_for_memory(self) -> int:
        """Threads blocked in ``acquire`` because the model does not fit beside what is held."""
        with self._cond:
            return self._waiting_room

    def free(self) -> int:
        """Bytes a load could have now without evicting anything."""
        with self._cond:
            return self._budget - self._used()

    def room(self) -> int:
        """Bytes a load could have now: what is free plus what evicting every idle model frees."""
        with self._cond:
            idle = sum(s.footprint for s in self._slots.values() if s.refcount == 0)
            return self._budget - self._used() + idle

    def holds(self, model: str) -> bool:
        """Whether ``model`` is loaded or loading here."""
        with self._cond:
            return model in self._slots or model in self._loading

    def _used(self) -> int:
        loaded = sum(s.footprint for s in self._slots.values())
        return (loaded + sum(ld.claimed for ld in self._loading.values()) + self._closing_bytes
                + sum(self._reserved.values()))

    # -- reservations (memory held outside the kernel: training jobs) ---------------------------------
    def reserve(self, key: str, nbytes: int) -> bool:
        """Count ``nbytes`` against the budget for ``key`` if they fit beside everything held now.

        Never evicts: a job waits for idle models to expire rather than pushing them out (the next
        request would only load them again). Returns False, reserving nothing, when it does not fit.
        """
        with self._cond:
            if key in self._reserved:
                return True
            if self._used() + nbytes > self._budget:
                return False
            self._reserved[key] = nbytes
            return True

    def unreserve(self, key: str) -> None:
        """Give a reservation back (no-op when there is none); waiting loads retry at once."""
        with self._cond:
            if self._reserved.pop(key, None) is not None:
                self._cond.notify_all()

    def reservations(self) -> dict[str, int]:
        with self._cond:
            return dict(self._reserved)

    def _keep_alive_for(self, model: str) -> float:
        return self._keep_alive.get(model, self.keep_alive_s)

    @contextmanager
    def _unlocked(self) -> Iterator[None]:
        self._cond.release()
        try:
            yield
        finally:
            self._cond.acquire()

    # -- acquire / release --------------------------------------------------------------------------
    def acquire(self, model: str, *, timeout: float | None = None) -> Engine:
        """The loaded engine for ``model``, loading it first if needed; pair with ``release``.

        Raises ``WontFit`` when the model is larger than the whole budget, or when it cannot fit
        beside the models in use within ``timeout`` seconds (default ``wait_timeout_s``); the
        timeout bounds the wait for memory, not a load already in progress. Errors
        from ``estimate`` (e.g. ModelNotFound) and from the loader propagate; a failed load leaves
        nothing behind, and every thread that waited on it gets the same error.
        """
        deadline = time.monotonic() + (self.wait_timeout_s if timeout is None else timeout)
        need: int | None = None
        with self._cond:
            while True:
                slot = self._slots.get(model)
                if slot is not None:
                    slot.refcount += 1
                    slot.last_used = self._clock()
                    return slot.engine
                pending = self._loading.get(model)
                if pending is not None:
                    self._wait_for_load(pending)
                    continue  # loaded: take it above (or load again if it was evicted meanwhile)
                if need is None:
                    with self._unlocked():  # an estimate may read the store; never block others on it
                        need = self._estimate(model)
                    continue  # the world may have moved while unlocked
                if need > self._budget:
                    raise self._too_large(model, need)
                pending = _Load(need)
                victims = self._make_room(need, pending)
                if victims is not None:
                    break
                self._wait_for_room(model, need, deadline)
            self._loading[model] = pending
        return self._load(model, pending, victims)

    def _wait_for_room(self, model: str, need: int, deadline: float) -> None:
        """Wait for any change (a release, a finished load or close); WontFit past the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._busy(model, need)
        self._waiting += 1
        self._waiting_room += 1
        try:
            self._cond.wait(remaining)
        finally:
            self._waiting -= 1
            self._waiting_room -= 1

    def _wait_for_load(self, pending: _Load) -> None:
        # Not bounded by the memory timeout: the thread that started the load waits for the loader
        # however long it takes, and those that arrived after it should not give up sooner.
        self._waiting += 1
        try:
            while not pending.done:
                self._cond.wait()
        finally:
            self._waiting -= 1
        if pending.error is not None:
            raise pending.error

    def _load(self, model: str, pending: _Load, victims: list[_Slot]) -> Engine:
        """Close the evicted engines, run the loader, publish the result (lock NOT held)."""
        self._close(victims, pending)
        engine: Engine | None = None
        try:
            engine = self._loader(model)
            footprint = engine.footprint()
        except BaseException as exc:
            if engine is not None:  # loaded but unusable: give its memory back before reporting
                self._close([_Slot(engine, 0, 0, 0.0, 0.0)])
            with self._cond:
                del self._loading[model]
                pending.done, pending.error = True, exc
                self._cond.notify_all()
            raise
        with self._cond:
            now = self._clock()
            del self._loading[model]
            self._slots[model] = _Slot(engine, footprint, refcount=1, last_used=now, loaded_at=now)
            self.loads += 1
            pending.done = True
            over = self._make_room(0)  # the measured footprint may exceed the estimate
            if over is None:
                log.warning("model %s measured %s, over its estimate of %s: %s of %s budget in use",
                            model, _size(footprint), _size(pending.reserved), _size(self._used()), _size(self._budget))
            self._cond.notify_all()
        self._close(over or [])
        return engine

    def release(self, model: str) -> None:
        """Drop one reference taken by ``acquire``; the model stays loaded for its keep-alive."""
        with self._cond:
            self._release(model)

    def _release(self, model: str) -> None:
        if self._orphans[model] > 0:
            self._orphans[model] -= 1
            return
        slot = self._slots.get(model)
        if slot is None or slot.refcount <= 0:
            raise ValueError(f"release({model!r}) without a matching acquire")
        slot.refcount -= 1
        slot.last_used = self._clock()
        self._cond.notify_all()

    # -- eviction -----------------------------------------------------------------------------------
    def _make_room(self, need: int, owner: _Load | None = None) -> list[_Slot] | None:
        """Evict idle models, least recently used first, until ``need`` more bytes fit.

        Returns the evicted slots (to close outside the lock), or None when even evicting every idle
        model would not make room; then nothing is evicted, so a waiting load cannot empty the
        cache for nothing.
        """
        excess = self._used() + need - self._budget
        if excess <= 0:
            return []
        idle = sorted((s for s in self._slots.items() if s[1].refcount == 0), key=lambda kv: kv[1].last_used)
        chosen: list[str] = []
        for name, slot in idle:
            if excess <= 0:
                break
            chosen.append(name)
            excess -= slot.footprint
        if excess > 0:
            return None
        self.evictions += len(chosen)
        return [self._evict(name, owner) for name in chosen]

    def _evict(self, model: str, owner: _Load | None = None) -> _Slot:
        """Take ``model`` out of the table; its bytes stay counted (by ``owner``) until closed."""
        slot = self._slots.pop(model)
        if owner is not None:
            owner.freeing += slot.footprint
        else:
            self._closing_bytes += slot.footprint
        log.info("unloading %s (%s)", model, _size(slot.footprint))
        return slot

    def _close(self, slots: list[_Slot], owner: _Load | None = None) -> None:
        """Close evicted engines (lock NOT held); their bytes count as used until close returns."""
        for slot in slots:
            try:
                slot.engine.close()
            except Exception:  # a failing close must not fail the load that evicted it
                log.exception("closing an evicted engine failed")
            finally:
                with self._cond:
                    if owner is not None:
                        owner.freeing -= slot.footprint
                    else:
                        self._closing_bytes -= slot.footprint
                    self._cond.notify_all()

    # -- explicit control ---------------------------------------------------------------------------
    def load(self, model: str, *, keep_alive_s: float | None = None) -> LoadedModel:
        """Load ``model`` (if needed) and leave it idle, so it stays until its keep-alive runs out."""
        if keep_alive_s is not None:
            self.set_keep_alive(model, keep_alive_s)
        self.acquire(model)
        with self._cond:  # release and describe at once, so no eviction can slip in between
            self._release(model)
            slot = self._slots.get(model)
            if slot is None:  # force-unloaded between the acquire and here
                raise Conflict(f"model {model!r} was unloaded while it was being loaded")
            return self._describe(model, slot)

    def unload(self, model: str, *, force: bool = False) -> bool:
        """Unload ``model`` now; False when it was not loaded.

        A model in use raises ``Conflict`` unless ``force``: then its engine is closed under its
        holders, whose next engine calls fail; the caller should fail their requests first. Their
        later ``release`` calls are absorbed. A model still loading always raises ``Conflict``.
        """
        with self._cond:
            if model in self._loading:
                raise Conflict(f"model {model!r} is loading; unload it once the load has finished")
            slot = self._slots.get(model)
            if slot is None:
                return False
            if slot.refcount > 0 and not force:
                raise Conflict(f"model {model!r} is in use by {slot.refcount} holder(s); "
                               "wait for them to finish or unload with force", refcount=slot.refcount)
            self._orphans[model] += slot.refcount
            victim = self._evict(model)
        self._close([victim])
        return True

    def sweep(self) -> list[str]:
        """Unload idle models whose keep-alive has run out; returns their names."""
        with self._cond:
            now = self._clock()
            expired = [m for m, s in self._slots.items()
                       if s.refcount == 0 and now - s.last_used >= self._keep_alive_for(m)]
            victims = [self._evict(m) for m in expired]
        self._close(victims)
        return expired

    def set_keep_alive(self, model: str, seconds: float | None) -> None:
        """Per-model keep-alive (``math.inf``: never unload when idle; None: back to the default)."""
        with self._cond:
            if seconds is None:
                self._keep_alive.pop(model, None)
                return
            _check_keep_alive(seconds)
            self._keep_alive[model] = seconds

    def close(self) -> None:
        """Unload everything, in use or not: the daemon is shutting down."""
        with self._cond:
            for model, slot in self._slots.items():
                self._orphans[model] += slot.refcount
            victims = [self._evict(m) for m in list(self._slots)]
        self._close(victims)

    # -- introspection ------------------------------------------------------------------------------
    def is_loaded(self, model: str) -> bool:
        with self._cond:
            return model in self._slots

    def snapshot(self) -> list[LoadedModel]:
        """Loaded models, most recently used first."""
        with self._cond:
            rows = [self._describe(m, s) for m, s in self._slots.items()]
        return sorted(rows, key=lambda r: r.last_used, reverse=True)

    def _describe(self, model: str, slot: _Slot) -> LoadedModel:
        return LoadedModel(model, slot.footprint, slot.refcount, slot.last_used, slot.loaded_at,
                           self._keep_alive_for(model), self.device)

    # -- errors -------------------------------------------------------------------------------------
    def check_fits(self, model: str) -> None:
        """Raise WontFit now if ``model`` could not fit even with every other model unloaded."""
        if self.is_loaded(model):
            return
        need = self._estimate(model)
        if need > self._budget:
            raise self._too_large(model, need)

    def _too_large(self, model: str, need: int) -> WontFit:
        return WontFit(
            f"model {model!r} needs about {_size(need)} but the whole memory budget is {_size(self._budget)}; "
            "raise LLMOS_MEMORY_BUDGET or use a smaller or quantised model",
            retry_after=0.0, model=model, need_bytes=need, budget_bytes=self._budget, reason="too_large",
        )

    def _busy(self, model: str, need: int) -> WontFit:
        holders = [f"{m} ({_size(s.footprint)}, {s.refcount} in use)" for m, s in self._slots.items() if s.refcount]
        holders += [f"{m} ({_size(ld.reserved)}, loading)" for m, ld in self._loading.items()]
        holders += [f"{k} ({_size(n)}, reserved)" for k, n in self._reserved.items()]
        idle = sum(s.footprint for s in self._slots.values() if s.refcount == 0)
        freeable = max(self._budget - self._used() + idle, 0)
        return WontFit(
            f"model {model!r} needs about {_size(need)} and only {_size(freeable)} of the "
            f"{_size(self._budget)} budget can be freed now; held by: {', '.join(holders) or 'nothing'}. "
            "Try again when they finish",
            retry_after=5.0, model=model, need_bytes=need, budget_bytes=self._budget, reason="busy",
            holders=holders,
        )


def _check_keep_alive(seconds: float) -> None:
    if not seconds >= 0:  # also rejects NaN
        raise ValueError(f"keep-alive must be >= 0 seconds (math.inf for never), got {seconds}")
