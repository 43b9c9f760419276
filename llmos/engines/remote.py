"""An engine on another machine: a Ray actor hosts the real engine, ``RemoteEngine`` stands in for it.

The engine contract is narrow and every argument and result is a dataclass of built-in types
(``llmos.engines.types``), so the kernel's worker drives a ``RemoteEngine`` exactly as it drives a
local one; each call is one actor call. Weights travel by content: the daemon asks the node whether
its cache holds a folder (keyed by the model's digest) and ships the files through Ray's object store
only when it does not; the node keeps them for the next load.

A streaming engine (llama.cpp) emits tokens from its own threads: the host queues them and the proxy
polls the queue from a thread of its own, handing each output to the kernel's ``emit``.

When the actor's node dies, every call raises ``EngineLost`` naming the node and ``alive()`` turns
False: the kernel retries the sequences that streamed nothing, ends the others with the error, and
places the model again.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos.engines.base import ChatMessage, Emit, Engine, EngineInfo, Span
from llmos.engines.loader import ENGINES
from llmos.engines.types import OutputConstraint, SequenceSpec, StepOutput
from llmos.errors import EngineLost

log = logging.getLogger(__name__)

POLL_S = 0.2  # how long one poll of a streaming host waits for outputs


@dataclass(frozen=True)
class EngineSpec:
    """How a node builds the engine: backend, the cached folder's key, and the engine's options."""

    backend: str
    folder_key: str
    name: str
    tasks: list[str]
    chat_template: str | None
    options: dict[str, Any]


class EngineHost:
    """Runs inside the actor: a node-local folder cache and the one engine it was asked to build."""

    def __init__(self, cache_dir: str) -> None:
        self._cache = Path(cache_dir).expanduser()
        self._cache.mkdir(parents=True, exist_ok=True)
        self._engine: Engine | None = None
        self._outputs: queue.Queue[StepOutput] = queue.Queue()

    # -- weights ----------------------------------------------------------------------------------
    def cached(self, key: str) -> bool:
        return (self._cache / key).is_dir()

    def store(self, key: str, files: dict[str, Any]) -> None:
        """Write a shipped folder (relative path -> bytes or an object ref of them) into the cache."""
        import ray

        if self.cached(key):
            return
        tmp = Path(tempfile.mkdtemp(dir=self._cache, prefix=".incoming-"))
        try:
            for rel, data in files.items():
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data if isinstance(data, bytes) else ray.get(data))
            try:
                os.replace(tmp, self._cache / key)  # whole or not at all: a half-shipped folder is never used
            except OSError:
                if not self.cached(key):  # else another host on this node stored it first: the same bytes
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def where(self) -> tuple[str, int]:
        """This host's Ray node id and process id."""
        import ray

        return ray.get_runtime_context().get_node_id(), os.getpid()

    def folder(self, key: str) -> str:
        return str(self._cache / key)

    # -- the engine -------------------------------------------------------------------------------
    def load(self, spec: EngineSpec) -> tuple[EngineInfo, bool]:
        factory = ENGINES.get(spec.backend)
        options = dict(spec.options)
        threads = options.pop("torch_threads", None)
        if threads:  # Ray starts actors with one thread for torch; the node's cores are this engine's
            import torch

            torch.set_num_threads(int(threads))
        self._engine = factory(Path(self.folder(spec.folder_key)), name=spec.name, tasks=spec.tasks,
                               chat_template=spec.chat_template, **options)
        return self._engine.info(), self._engine.streams

    def add_adapter(self, name: str, key: str) -> None:
        self._require().add_adapter(name, self.folder(key))

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return getattr(self._require(), method)(*args, **kwargs)

    def start(self, seqs: list[SequenceSpec]) -> None:
        self._require().start(seqs, self._outputs.put)

    def poll(self, timeout: float) -> list[StepOutput]:
        """Outputs emitted since the last poll (waits up to ``timeout`` for the first)."""
        try:
            out = [self._outputs.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                out.append(self._outputs.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def _require(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("no engine is loaded on this host")
        return self._engine


def _lost_errors() -> tuple[type[BaseException], ...]:
    import ray.exceptions as rex

    return (rex.RayActorError, rex.ActorUnavailableError, rex.NodeDiedError, rex.WorkerCrashedError,
            rex.ObjectLostError)


class RemoteEngine(Engine):
    """The kernel's side of an ``EngineHost`` actor (see the module docstring)."""

    def __init__(self, actor: Any, info: EngineInfo, streams: bool, node: str,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self._actor = actor
        self._info = info
        self.streams = streams
        self.node = node
        self._on_lost = on_lost
        self._lost: str | None = None
        self._emit: Emit | None = None
        self._lock = threading.Lock()
        self._poller: threading.Thread | None = None

    def alive(self) -> bool:
        return self._lost is None

    def _get(self, ref: Any) -> Any:
        import ray

        if self._lost is not None:
            raise EngineLost(self._lost, node=self.node)
        try:
            return ray.get(ref)
        except _lost_errors() as exc:
            self._mark_lost(f"the engine of {self._info.model} on node {self.node} is gone: "
                            f"{type(exc).__name__}")
            raise EngineLost(self._lost or "", node=self.node) from None

    def _mark_lost(self, message: str) -> None:
        """From now on every call raises EngineLost and ``alive()`` is False: the kernel's worker ends or
        retries the sequences in flight (it knows which streamed already) and places the model again."""
        with self._lock:
            if self._lost is not None:
                return
            self._lost = message
        log.error(message)
        if self._on_lost is not None:
            self._on_lost(self.node)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._get(self._actor.call.remote(method, args, kwargs))

    # -- the contract -----------------------------------------------------------------------------
    def info(self) -> EngineInfo:
        return self._info

    def footprint(self) -> int:
        return self._info.footprint_bytes if self._lost is not None else self._call("footprint")

    def encode(self, text: str) -> list[int]:
        return self._call("encode", text)

    def encode_chat(self, messages: list[ChatMessage]) -> list[int]:
        return self._call("encode_chat", messages)

    def add_adapter(self, name: str, path: str) -> None:
        key = ship_folder(self._actor, Path(path), f"adapter-{Path(path).name}", self._get)
        self._get(self._actor.add_adapter.remote(name, key))

    def remove_adapter(self, name: str) -> None:
        self._call("remove_adapter", name)

    def prefill(self, seqs: list[SequenceSpec]) -> list[StepOutput]:
        return self._call("prefill", seqs)

    def decode(self, ids: list[str]) -> list[StepOutput]:
        return self._call("decode", ids)

    def release(self, ids: list[str]) -> None:
        if self._lost is None:
            self._call("release", ids)

    def start(self, seqs: list[SequenceSpec], emit: Emit) -> None:
        self._emit = emit
        self._get(self._actor.start.remote(seqs))
        if self._poller is None:
            self._poller = threading.Thread(target=self._poll_loop, name=f"remote-{self._info.model}", daemon=True)
            self._poller.start()

    def _poll_loop(self) -> None:
        while self._lost is None and self._emit is not None:
            try:
                outputs = self._get(self._actor.poll.remote(POLL_S))
            except EngineLost:
                return
            emit = self._emit
            for out in outputs:
                if emit is not None:
                    emit(out)

    def embed(self, texts: list[str], *, adapter: str | None = None) -> list[list[float]]:
        return self._call("embed", texts, adapter=adapter)

    def classify(self, texts: list[str], *, adapter: str | None = None) -> list[dict[str, float]]:
        return self._call("classify", texts, adapter=adapter)

    def tag(self, texts: list[str], *, adapter: str | None = None) -> list[list[Span]]:
        return self._call("tag", texts, adapter=adapter)

    def score(self, contexts: list[list[int]], continuations: list[list[int]], *,
              adapter: str | None = None) -> list[list[list[float]]]:
        return self._call("score", contexts, continuations, adapter=adapter)

    def check_constraint(self, constraint: OutputConstraint) -> None:
        self._call("check_constraint", constraint)

    def close(self) -> None:
        import ray

        emit, self._emit = self._emit, None  # stops the poller
        if self._lost is None:
            try:
                ray.get(self._actor.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - a node that died meanwhile has nothing left to free
                log.warning("closing the engine of %s on node %s failed", self._info.model, self.node)
        ray.kill(self._actor, no_restart=True)
        del emit


def ship_folder(actor: Any, folder: Path, key: str, get: Callable[[Any], Any],
                keep: Callable[[str], bool] = lambda rel: True) -> str:
    """Make ``folder`` (the files ``keep`` accepts) present in the actor's node cache under ``key``."""
    import ray

    if not get(actor.cached.remote(key)):
        files = {p.relative_to(folder).as_posix(): ray.put(p.read_bytes())
                 for p in sorted(folder.rglob("*")) if p.is_file() and keep(p.relative_to(folder).as_posix())}
        get(actor.store.remote(key, files))
    return key
