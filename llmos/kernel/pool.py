"""Placement across devices: one ``ResourceManager`` per device, and the choice of device per model.

``DevicePool`` answers the resource manager's interface (acquire / release / load / unload / sweep /
reserve / snapshot ...) for the whole machine. A model that is not loaded goes to the first device,
GPUs before the host, that its engine can use, whose budget could ever hold it, and that has free
memory for it now (of several, the one with the most free: models spread over equal GPUs or nodes); failing that, the first where evicting idle models makes room; failing that, it
waits on the one with the most room. Each device keeps its own LRU eviction, keep-alive and accounting. A load that
runs a GPU out of memory moves on to the next device; a model larger than every device's budget is
refused at once (``WontFit``, 507) naming the largest device.

A model stays on the device it was placed on while it is loaded, loading, or being acquired; after
it is unloaded the next acquire places it again (and a different device counts as a move).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from llmos.engines.base import Engine
from llmos.errors import Unavailable, WontFit
from llmos.kernel.devices import CPU, Device
from llmos.kernel.resources import Clock, LoadedModel, ResourceManager, _size

Loader = Callable[[str, Device], Engine]
CanRun = Callable[[str, Device], bool]  # (engine key, device) -> whether that engine can run there


@dataclass
class DeviceState:
    """One device as ``llmos ps`` shows it."""

    id: str
    kind: str
    name: str
    total_bytes: int
    budget_bytes: int
    used_bytes: int
    models: list[str] = field(default_factory=list)
    reserved: dict[str, int] = field(default_factory=dict)
    loads: int = 0
    evictions: int = 0
    moves: int = 0  # models loaded here that last sat on another device


def is_out_of_memory(exc: BaseException) -> bool:
    """A device ran out of memory during a load (torch's CUDA OOM, or an engine saying so)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return "out of memory" in str(exc).lower()


class DevicePool:
    """The resource manager of a machine with several devices (see the module docstring)."""

    def __init__(self, devices: list[Device], budgets: dict[str, int], *, loader: Loader,
                 estimate: Callable[[str], int], can_run: CanRun, clock: Clock = time.monotonic,
                 keep_alive_s: float = 300.0, wait_timeout_s: float = 60.0) -> None:
        usable = [d for d in devices if d.id in budgets]  # may be empty: a cluster whose workers join later
        self._keep_alive_s = keep_alive_s
        # GPUs first: a model goes to the host only when no GPU its engine can use has room.
        self.devices = sorted(usable, key=lambda d: (d.rank, d.id))
        self._estimate = estimate
        self._can_run = can_run
        self._rm_options = {"clock": clock, "wait_timeout_s": wait_timeout_s}
        self._rms = {d.id: ResourceManager(budgets[d.id], loader=self._loader_on(loader, d), estimate=estimate,
                                           keep_alive_s=keep_alive_s, device=d.id, **self._rm_options)
                     for d in self.devices}
        self._lock = threading.Lock()
        self._placed: dict[str, str] = {}  # model -> device it is loaded, loading or being acquired on
        self._last: dict[str, str] = {}  # model -> the device it last loaded on (to count moves)
        self._pending: Counter[str] = Counter()  # acquires under way per model
        self._held: dict[str, Counter[str]] = {}  # model -> device -> references handed out
        self._moves: Counter[str] = Counter()
        self._job_device: dict[str, str] = {}  # reservation key -> its device

    def _loader_on(self, loader: Loader, device: Device) -> Callable[[str], Engine]:
        def load(model: str) -> Engine:
            engine = loader(model, device)
            with self._lock:
                if self._last.get(model, device.id) != device.id:
                    self._moves[device.id] += 1
                self._last[model] = device.id
            return engine
        return load

    def add_device(self, device: Device, budget: int, loader: Loader) -> None:
        """A device that appeared after start (a cluster node that joined or came back)."""
        with self._lock:
            if device.id in self._rms or budget <= 0:
                return
            self._rms[device.id] = ResourceManager(budget, loader=self._loader_on(loader, device),
                                                   estimate=self._estimate, keep_alive_s=self._keep_alive_s,
                                                   device=device.id, **self._rm_options)
            self.devices = sorted([*self.devices, device], key=lambda d: (d.rank, d.id))

    def manager(self, device_id: str) -> ResourceManager:
        return self._rms[device_id]

    # -- placement ----------------------------------------------------------------------------------
    def _candidates(self, model: str, need: int, exclude: set[str]) -> list[Device]:
        able = [d for d in self.devices if self._can_run(model, d)]
        if not able:
            raise Unavailable(f"no device can run model {model!r} now: every one that could is gone (a cluster "
                              "node down?); try again when one is back", retry_after=5.0, model=model)
        fits = [d for d in able if self._rms[d.id].budget_bytes >= need and d.id not in exclude]
        if not fits and not exclude:
            raise self._too_large(model, need, able)
        return fits

    def _place(self, model: str, exclude: set[str]) -> str:
        """The device for ``model`` (lock held); counts one acquire under way there."""
        where = self._placed.get(model)
        if where is None or where in exclude or not (self._pending[model] or self._rms[where].holds(model)):
            need = self._estimate(model)
            candidates = self._candidates(model, need, exclude)
            if not candidates:
                raise WontFit(f"model {model!r} ran out of memory on {', '.join(sorted(exclude))} and no other "
                              "device can hold it", retry_after=5.0, model=model, reason="out_of_memory")
            # Among devices with free room, GPUs first, then the one with the most free (models spread
            # over equal nodes or GPUs rather than piling onto the first).
            free = sorted((d for d in candidates if self._rms[d.id].free() >= need),
                          key=lambda d: (d.rank, -self._rms[d.id].free()))
            roomy = [d for d in candidates if self._rms[d.id].room() >= need]
            where = (free or roomy or sorted(candidates, key=lambda d: -self._rms[d.id].room()))[0].id
            self._placed[model] = where
        self._pending[model] += 1
        return where

    def device_of(self, model: str) -> str | None:
        """Where ``model`` is loaded (or loading) now."""
        with self._lock:
            where = self._placed.get(model)
            return where if where is not None and self._rms[where].holds(model) else None

    # -- the resource manager's interface -----------------------------------------------------------
    def acquire(self, model: str, *, timeout: float | None = None) -> Engine:
        failed: set[str] = set()
        while True:
            with self._lock:
                where = self._place(model, failed)
            try:
                engine = self._rms[where].acquire(model, timeout=timeout)
            except Exception as exc:
                if where == CPU or not is_out_of_memory(exc):
                    raise
                failed.add(where)  # that GPU is fuller than its budget said: try the next device
                continue
            finally:
                with self._lock:
                    self._pending[model] -= 1
            with self._lock:
                self._held.setdefault(model, Counter())[where] += 1
            return engine

    def release(self, model: str) -> None:
        with self._lock:
            held = self._held.get(model)
            if not held:
                raise ValueError(f"release({model!r}) without a matching acquire")
            # After a forced unload and a reload elsewhere, the stale reference is the one not loaded.
            where = next((d for d in held if not self._rms[d].is_loaded(model)), next(iter(held)))
            held[where] -= 1
            if held[where] <= 0:
                del held[where]
        self._rms[where].release(model)

    def load(self, model: str, *, keep_alive_s: float | None = None) -> LoadedModel:
        if keep_alive_s is not None:
            self.set_keep_alive(model, keep_alive_s)
        self.acquire(model)
        with self._lock:
            where = next(iter(self._held[model]))
        self.release(model)
        return next(m for m in self._rms[where].snapshot() if m.model == model)

    def unload(self, model: str, *, force: bool = False) -> bool:
        return any([rm.unload(model, force=force) for rm in self._rms.values()])

    def sweep(self) -> list[str]:
        return [m for rm in self._rms.values() for m in rm.sweep()]

    def set_keep_alive(self, model: str, seconds: float | None) -> None:
        for rm in self._rms.values():
            rm.set_keep_alive(model, seconds)

    @property
    def keep_alive_s(self) -> float:
        return self._keep_alive_s

    @keep_alive_s.setter
    def keep_alive_s(self, seconds: float) -> None:
        self._keep_alive_s = seconds
        for rm in self._rms.values():
            rm.keep_alive_s = seconds

    def close(self) -> None:
        for rm in self._rms.values():
            rm.close()

    def is_loaded(self, model: str) -> bool:
        return any(rm.is_loaded(model) for rm in self._rms.values())

    def snapshot(self) -> list[LoadedModel]:
        rows = [m for rm in self._rms.values() for m in rm.snapshot()]
        return sorted(rows, key=lambda r: r.last_used, reverse=True)

    def check_fits(self, model: str) -> None:
        if self.is_loaded(model):
            return
        self._candidates(model, self._estimate(model), set())

    # -- totals (for the single-budget views: /admin/ps's headline, the memory gauges) ----------------
    @property
    def budget_bytes(self) -> int:
        return sum(rm.budget_bytes for rm in self._rms.values())

    @property
    def used_bytes(self) -> int:
        return sum(rm.used_bytes for rm in self._rms.values())

    @property
    def waiting(self) -> int:
        return sum(rm.waiting for rm in self._rms.values())

    @property
    def waiting_for_memory(self) -> int:
        return sum(rm.waiting_for_memory for rm in self._rms.values())

    # -- reservations: training jobs take a GPU when one has room -----------------------------------
    def reserve(self, key: str, nbytes: int) -> str | None:
        """Reserve ``nbytes`` on the first device (GPUs first) where they fit beside what is held now;
        returns that device's id, or None when none has room (nothing reserved)."""
        with self._lock:
            if key in self._job_device:
                return self._job_device[key]
            for d in self.devices:
                if self._rms[d.id].reserve(key, nbytes):
                    self._job_device[key] = d.id
                    return d.id
        return None

    def unreserve(self, key: str) -> None:
        with self._lock:
            where = self._job_device.pop(key, None)
        if where is not None:
            self._rms[where].unreserve(key)

    def reservations(self) -> dict[str, int]:
        return {k: n for rm in self._rms.values() for k, n in rm.reservations().items()}

    def reserved_on(self, key: str) -> str | None:
        with self._lock:
            return self._job_device.get(key)

    # -- introspection ------------------------------------------------------------------------------
    def states(self) -> list[DeviceState]:
        out = []
        for d in self.devices:
            rm = self._rms[d.id]
            out.append(DeviceState(d.id, d.kind, d.name, d.total_bytes, rm.budget_bytes, rm.used_bytes,
                                   [m.model for m in rm.snapshot()], rm.reservations(), rm.loads, rm.evictions,
                                   self._moves[d.id]))
        return out

    def _too_large(self, model: str, need: int, able: list[Device]) -> WontFit:
        largest = max(able, key=lambda d: self._rms[d.id].budget_bytes)
        budget = self._rms[largest.id].budget_bytes
        hint = "raise LLMOS_GPU_BUDGET" if largest.gpu else "raise LLMOS_MEMORY_BUDGET"
        return WontFit(
            f"model {model!r} needs about {_size(need)} but the largest device, {largest.id} ({largest.name}), "
            f"has a memory budget of {_size(budget)}; {hint} or use a smaller or quantised model",
            retry_after=0.0, model=model, need_bytes=need, budget_bytes=budget, device=largest.id,
            reason="too_large",
        )
