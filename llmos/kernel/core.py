"""The kernel: owns the resource manager and one worker per base model; bridges them to asyncio.

API handlers call ``resolve`` (name -> what runs), ``generate`` (an async stream of tokens), ``call``
(one engine call such as embed), ``cancel``, ``load`` / ``unload`` and ``ps``. Engines are reached
only through workers, with serialisable arguments.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from llmos.config import Settings
from llmos.engines.base import Engine
from llmos.engines.llamacpp import SPARE_SLOTS, slot_share
from llmos.engines.llamacpp_lora import read_config as read_adapter_config
from llmos.engines.llamacpp_lora import unsupported as unsupported_lora
from llmos.engines.loader import base_of, load_engine, runs_on
from llmos.errors import WrongTask
from llmos.kernel.codec import CodecCache, PromptCodec
from llmos.kernel.devices import CUDA, Device, DeviceProbe, budgets, can_use, cpu_note, cpu_only, probe_devices
from llmos.kernel.pool import DevicePool, DeviceState
from llmos.engines.types import OutputConstraint, StepOutput
from llmos.kernel.placement import HF, LLAMACPP, engine_key, place, preferred, split_key
from llmos.kernel.request import Request
from llmos.kernel.resolving import ClockedCache
from llmos.kernel.scheduler import Scheduler, SchedulerStats
from llmos.kernel.worker import ModelWorker
from llmos.store.manifest import ModelInfo
from llmos.store.names import DEFAULT_TENANT
from llmos.store.registry import Registry

EngineFactory = Callable[[str], Engine]
PlacedFactory = Callable[[str, Device], Engine]  # (engine key, the device chosen) -> its engine
KV_RESERVE = 1.25  # weights x this: room for activations and KV caches of a full batch


@dataclass(frozen=True)
class Resolved:
    info: ModelInfo  # what the caller named
    base: ModelInfo  # the full-weights model that runs
    adapter: str | None  # the adapter's key when ``info`` is an adapter
    engine: str = HF  # the engine kind that runs it (llmos.kernel.placement)
    note: str | None = None  # why that is not the model's preferred engine
    version: str | None = None  # ``NAME:vN`` that ``NAME:latest`` pointed at when it was resolved

    @property
    def name(self) -> str:
        """The exact version that answers, as the caller names it (never another tenant's qualifier):
        ``NAME:vN`` for a ``NAME`` that points into a versioned series, so a response, its log row and
        the feedback on it all say which version answered; else what the caller named."""
        return self.version if self.version is not None else self.named

    @property
    def named(self) -> str:
        """What the caller named, as it names it: ``NAME`` follows ``NAME:latest`` wherever it points."""
        return self.info.name if self.info.tag == "latest" else self.info.ref

    @property
    def exact(self) -> str:
        """``name:tag`` of what answered, as the request log records it."""
        return self.version or self.info.ref

    @property
    def key(self) -> str:
        """The worker and resource-manager key: one engine of one base model."""
        return engine_key(self.base.key, self.engine)


@dataclass
class ModelState:
    model: str
    loaded: bool
    footprint_bytes: int
    in_use: int
    queue: SchedulerStats | None
    expires_in_s: float | None = None
    adapters: list[str] = field(default_factory=list)
    engine: str = HF
    routed: list[str] = field(default_factory=list)  # why requests came to this engine and not the preferred one
    device: str | None = None  # where it is loaded ("cpu", "cuda:0"); None while not loaded


@dataclass
class Activity:
    """Interactive load across every worker, as the co-scheduler samples it."""

    waiting: int  # generation requests queued for a batch slot
    running: int  # generation requests in a batch
    calls: int  # one-off engine calls (embed, classify, tag) queued or running
    loading: int  # threads waiting for a model to load or for memory to load it
    ttfts: list[float]  # recent times to first token, seconds

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running or self.calls or self.loading)


class Kernel:
    def __init__(self, settings: Settings, registry: Registry, *, engine_factory: EngineFactory | None = None,
                 placed_factory: PlacedFactory | None = None, device_probe: DeviceProbe | None = None,
                 device_alive: Callable[[Device], bool] | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.codecs = CodecCache(registry)
        self.router: Callable[[str, str], str] | None = None  # (name, request id) -> name to resolve
        self.on_work: Callable[[], None] | None = None  # told of each request / call (the co-scheduler's wake-up)
        if engine_factory is not None:
            placed_factory = placed_factory or (lambda key, _device: engine_factory(key))
        self._factory = placed_factory or self._load_engine
        self.placed_factory: PlacedFactory = self._factory
        self._device_alive = device_alive  # cluster mode: whether a node may still take models
        probe = device_probe or (cpu_only if settings.devices == "cpu" else probe_devices)
        found = probe()
        self.resources = DevicePool(found, budgets(found, settings.memory_budget, settings.gpu_budget),
                                    loader=self._factory, estimate=self._estimate, can_run=self._can_run,
                                    keep_alive_s=settings.keep_alive)
        self._workers: dict[str, ModelWorker] = {}
        self._routed: dict[str, set[str]] = {}  # engine key -> why requests were routed to it
        self._lora_checks: dict[tuple[str, str], str | None] = {}  # (adapter, base digest) -> unsupported
        self.resolutions: ClockedCache[Resolved] = ClockedCache()  # (name, task, tenant, needs) -> Resolved
        self._listeners: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]] = {}
        self._good_constraints: set[tuple[str, tuple[str, str, str, str]]] = set()
        self._checking: dict[tuple[str, tuple[str, str, str, str]], asyncio.Future[None]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="keep-alive", daemon=True)
        self._sweeper.start()

    # -- models ----------------------------------------------------------------------------------
    def resolve(self, name: str, task: str, *, key: str | None = None,
                tenant: str | None = DEFAULT_TENANT, needs: str | None = None) -> Resolved:
        """What runs for ``name``; WrongTask (400) naming the models that can do ``task``.

        ``name`` is read in ``tenant``'s namespace (``None``: public models alone); other tenants'
        private models are treated as absent (404, never named).

        With a ``key`` (the request id) and a ``router`` set, the router may send the request to another
        version of the name first: the feedback loop's canary split (``llmos.feedback.canary``).
        ``needs`` names what the request asks that not every engine does (``placement.place``).
        """
        if key is not None and self.router is not None:
            name = self.router(name, key, tenant)
        clock = self.registry.clock()  # read first: a write landing during the resolution stales it
        found = self.resolutions.get((name, task, tenant, needs), clock)
        if found is None:
            found = self._resolve(name, task, tenant, needs)
            self.resolutions.put((name, task, tenant, needs), clock, found)
        if found.note is not None:
            self._routed.setdefault(engine_key(found.base.key, found.engine), set()).add(found.note)
        return found

    def _resolve(self, name: str, task: str, tenant: str | None, needs: str | None) -> Resolved:
        info = self.registry.get(name, tenant=tenant)
        if task not in info.manifest.tasks:
            able = [i.ref for i in self.registry.list(tenant=tenant) if task in i.manifest.tasks]
            raise WrongTask(f"model {info.ref} cannot {task} (it serves: {', '.join(info.manifest.tasks)}); "
                            f"models that can: {', '.join(able) or 'none'}", models=able)
        ran = runs_on(self.registry, info)  # a prompt task answers through its base model
        target = self._pinned(ran)
        pinned = target if ran is info else self._pinned(info)
        base = base_of(self.registry, target)
        adapter = target.key if base is not target else None
        where = place(base.manifest, self.settings.engine, task=task, adapter=adapter is not None,
                      scores=info.manifest.kind == "prompt_task", needs=needs,
                      adapter_unsupported=None if adapter is None else self._lora_unsupported(target, base))
        version = pinned.ref if pinned is not info else None
        return Resolved(info, base, adapter, where.engine, where.note, version)

    def _pinned(self, info: ModelInfo) -> ModelInfo:
        """``name:latest`` runs as the version tag holding the same manifest. Engines and adapters are
        keyed by ref, so re-pointing ``latest`` (a promotion, a rollback, a new fine-tune) switches the
        weights at the next request instead of serving the ones loaded under the old pointer."""
        return self.registry.version_of(info)

    def _lora_unsupported(self, adapter: ModelInfo, base: ModelInfo) -> str | None:
        """What llama.cpp cannot serve about ``adapter`` (its PEFT config, read once per digest)."""
        if preferred(base.manifest, self.settings.engine) == HF:
            return None
        key = (adapter.digest, base.digest)
        if key not in self._lora_checks:
            config = read_adapter_config(self.registry.snapshot(adapter))
            self._lora_checks[key] = unsupported_lora(config, base.manifest.model_type or "")
        return self._lora_checks[key]

    def codec(self, r: Resolved) -> PromptCodec:
        return self.codecs.get(r.info, r.base)

    async def codec_async(self, r: Resolved) -> PromptCodec:
        """``codec`` from an event loop: a loaded codec at once, a first load in a thread of its own."""
        return self.codecs.loaded(r.info) or await asyncio.to_thread(self.codec, r)

    # Engines, workers and adapters are keyed by ``ModelInfo.key`` (two tenants' NAME never share one),
    # with the engine kind appended for kinds other than hf (``llmos.kernel.placement.engine_key``).
    def _load_engine(self, key: str, device: Device) -> Engine:
        """One engine on ``device``: transformers in ``gpu_dtype`` on a GPU; llama.cpp with every layer
        offloaded there (placement sends it to a GPU only when its build has a GPU backend)."""
        model_key, engine = split_key(key)
        gpu = device.kind == CUDA
        if engine == HF:
            return load_engine(self.registry, model_key, max_batch_size=self.settings.max_batch, device=device.id,
                               dtype=self.settings.gpu_dtype if gpu else self.settings.dtype)
        return load_engine(self.registry, model_key, backend=engine, max_batch_size=self.settings.max_batch,
                           threads=self.settings.llamacpp_threads, kv_tokens=self.settings.llamacpp_kv_tokens,
                           kv_layout=self.settings.llamacpp_kv,
                           lora_cache=self.settings.lora_gguf_dir, gpu_layers=-1 if gpu else 0,
                           main_gpu=device.index or 0,
                           context_length=self.registry.get_key(model_key).manifest.context_length)

    def _can_run(self, key: str, device: Device) -> bool:
        alive = self._device_alive is None or self._device_alive(device)
        return alive and can_use(split_key(key)[1], device)

    def estimate(self, key: str) -> int:
        """Bytes the engine of ``key`` (a ``Resolved.key``) is expected to hold once loaded."""
        return self._estimate(key)

    def _estimate(self, key: str) -> int:
        """Bytes of the files this engine reads (a GGUF for llama.cpp, the rest for transformers), plus room."""
        model_key, engine = split_key(key)
        files = self.registry.get_key(model_key).manifest.files
        gguf = sum(f.size for f in files if f.path.endswith(".gguf"))
        used = gguf if engine != HF else sum(f.size for f in files) - gguf
        return int(used * KV_RESERVE)

    def _adapter_path(self, key: str) -> str:
        return str(self.registry.snapshot(key))

    def worker(self, key: str) -> ModelWorker:
        """The worker of one engine key (``Resolved.key``; a bare ref is the transformers engine)."""
        with self._lock:
            w = self._workers.get(key)
            if w is None:
                sched = Scheduler(self.settings.policy, max_queue=self.settings.max_queue,
                                  max_batch=self.settings.max_batch,
                                  max_prefill_tokens=self.settings.max_prefill_tokens)
                w = self._workers[key] = ModelWorker(key, sched, self.resources, self._deliver,
                                                          self._adapter_path)
            return w

    # -- generation --------------------------------------------------------------------------------
    async def generate(self, req: Request) -> AsyncIterator[StepOutput]:
        """Queue ``req`` (QueueFull -> 503 before anything streams) and yield its tokens.

        A ``req.background`` request (batch work) runs like any other but is not interactive load.

        When the consumer stops early (client gone), the request is cancelled and its slot freed.
        Afterwards ``req.status`` / ``req.finish_reason`` / ``req.error`` tell how it ended.
        """
        self.resources.check_fits(req.model)  # 507 up front rather than a failed stream
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._listeners[req.id] = (asyncio.get_running_loop(), queue)
        try:
            self.worker(req.model).submit(req)
        except Exception:
            self._listeners.pop(req.id, None)
            raise
        if not req.background:
            self._notify()
        return self._drain(req, queue)

    async def generate_all(self, reqs: list[Request]) -> list[AsyncIterator[StepOutput]]:
        """``generate`` for several requests (a request's choices): all are queued, or none is.

        Requests queued before one is refused are cancelled and forgotten before the error is raised.
        """
        streams: list[AsyncIterator[StepOutput]] = []
        try:
            for req in reqs:
                streams.append(await self.generate(req))
        except Exception:
            self.forget(reqs[:len(streams)])
            raise
        return streams

    def forget(self, reqs: list[Request]) -> None:
        """Stop listening to ``reqs`` and cancel those still running; safe on finished ones. For streams
        that may never have been iterated (their own cleanup runs only once they start)."""
        for req in reqs:
            self._listeners.pop(req.id, None)
            if not req.status.finished:
                self.cancel(req)

    async def check_constraint(self, r: Resolved, constraint: OutputConstraint) -> None:
        """Have the model's engine compile ``constraint`` (InvalidInput when it cannot be enforced).

        A constraint once accepted for a model is known good: compiling is deterministic, so later
        requests with it skip the engine round trip (the engine compiles again from its own cache).
        """
        key = (r.key, constraint.key)  # per engine: each kind compiles its own way
        if key in self._good_constraints:
            return
        pending = self._checking.get(key)  # many requests with a new schema at once: one check
        if pending is None:
            pending = self._checking[key] = asyncio.ensure_future(
                self.call(r, lambda engine: engine.check_constraint(constraint)))
            pending.add_done_callback(lambda _: self._checking.pop(key, None))
        await asyncio.shield(pending)
        if len(self._good_constraints) >= 4096:
            self._good_constraints.clear()
        self._good_constraints.add(key)

    async def _drain(self, req: Request, queue: asyncio.Queue[Any]) -> AsyncIterator[StepOutput]:
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Request):
                    return
                yield item
        finally:
            self._listeners.pop(req.id, None)
            if not req.status.finished:
                self.cancel(req)

    def cancel(self, req: Request) -> None:
        w = self._workers.get(req.model)
        if w is not None:
            w.cancel(req.id)

    def _deliver(self, req_id: str, item: StepOutput | Request) -> None:
        target = self._listeners.get(req_id)
        if target is not None:
            loop, queue = target
            loop.call_soon_threadsafe(queue.put_nowait, item)

    async def call(self, r: Resolved, fn: Callable[[Engine], Any], *, background: bool = False) -> Any:
        """Run one engine call (embed, classify, tag) on the model's worker thread; a ``background``
        call (batch work) is not interactive load (``activity``)."""
        self.resources.check_fits(r.key)
        future = self.worker(r.key).call(fn, background=background)
        if not background:
            self._notify()
        return await asyncio.wrap_future(future)

    def call_blocking(self, r: Resolved, fn: Callable[[Engine], Any]) -> Any:
        """``call`` for a thread that is not the event loop's (a knowledge base embedding its chunks
        inside a request's thread pool): the same worker, queue limit and memory budget."""
        self.resources.check_fits(r.key)
        future = self.worker(r.key).call(fn)
        self._notify()
        return future.result()

    def _notify(self) -> None:
        if self.on_work is not None:
            self.on_work()

    # -- admin -------------------------------------------------------------------------------------
    def load(self, name: str, keep_alive_s: float | None = None, *,
             tenant: str | None = DEFAULT_TENANT) -> ModelState:
        """Load the engine that serves generation (or the only engine) of ``name`` as ``tenant`` reads it
        (``None``: public names alone), and keep it."""
        base = base_of(self.registry, self._pinned(self.registry.get(name, tenant=tenant)))
        key = engine_key(base.key, preferred(base.manifest, self.settings.engine))
        self.resources.load(key, keep_alive_s=keep_alive_s)
        return next(s for s in self.ps() if engine_key(s.model, s.engine) == key)

    def unload(self, name: str, *, tenant: str | None = DEFAULT_TENANT) -> bool:
        """Unload every engine of ``name``'s base model; False when none was loaded."""
        base = base_of(self.registry, self._pinned(self.registry.get(name, tenant=tenant)))
        keys = [k for k in [m.model for m in self.resources.snapshot()] if split_key(k)[0] == base.key]
        return any([self.resources.unload(k) for k in keys or [base.key]])

    def context_length(self, r: Resolved) -> int:
        """The most tokens (prompt and answer) a request to ``r`` may use: the model's context, or less
        on a llama.cpp engine whose slots each hold their own share of the KV cache."""
        context = r.base.manifest.context_length or 2048
        if r.engine == LLAMACPP and self.settings.llamacpp_kv == "per-slot":
            slots = self.settings.max_batch + SPARE_SLOTS
            context = min(context, slot_share(slots, self.settings.llamacpp_kv_tokens))
        return context

    def ps(self) -> list[ModelState]:
        loaded = {m.model: m for m in self.resources.snapshot()}
        now = time.monotonic()
        out = []
        for key in sorted(set(loaded) | set(self._workers)):
            m, w = loaded.get(key), self._workers.get(key)
            expires = m.expires_at if m else None
            ref, engine = split_key(key)
            out.append(ModelState(ref, m is not None, m.footprint if m else 0, m.refcount if m else 0,
                                  w.scheduler.stats() if w else None,
                                  None if expires is None else max(0.0, expires - now), engine=engine,
                                  routed=sorted(self._routed.get(key, ())), device=m.device if m else None))
        return out

    def devices(self) -> list[DeviceState]:
        """Each device, its budget, what it holds and its load / eviction / move counts."""
        return self.resources.states()

    def device_notes(self) -> list[str]:
        """Engine kinds that stay on the host although there are GPUs, and why."""
        notes = (cpu_note(kind, self.resources.devices) for kind in ("hf", "llamacpp"))
        return [n for n in notes if n is not None]

    def activity(self, ttft_window_s: float = 10.0) -> Activity:
        """What interactive work is in the kernel now (cheap: counters only, no store reads). Background
        requests and calls (batch work) are left out: they are what yields, not what is yielded to."""
        with self._lock:
            workers = list(self._workers.values())
        waiting = running = calls = 0
        ttfts: list[float] = []
        for w in workers:
            waiting += sum(1 for r in w.scheduler.waiting if not r.background)
            running += sum(1 for r in w.scheduler.running if not r.background)
            calls += w.interactive_calls
            ttfts += w.scheduler.recent_ttfts(ttft_window_s)
        return Activity(waiting, running, calls, self.resources.waiting, ttfts)

    def _sweep_loop(self) -> None:
        while not self._closed.wait(timeout=5.0):
            self.resources.sweep()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for w in list(self._workers.values()):
            w.stop()
        self.resources.close()
