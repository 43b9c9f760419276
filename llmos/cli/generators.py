"""Where `llmos run` and `llmos chat` generate: in the running daemon, so the model stays loaded between
invocations, or in this process when nothing listens at the daemon's address.

Only "nothing listens" falls back: a daemon that answers with an error (a refused key, an unknown model,
a full queue) is reported with its exit code, never bypassed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from llmos.cli.common import err, runtime
from llmos.client import Client, DaemonNotRunning
from llmos.engines.base import ChatMessage, Engine
from llmos.engines.llamacpp_lora import read_config, unsupported as unsupported_lora
from llmos.engines.loader import base_of, load_engine
from llmos.errors import EngineFailed, WrongTask
from llmos.kernel.local import stream
from llmos.kernel.placement import place
from llmos.engines.types import SamplingParams
from llmos.store.names import DEFAULT_TENANT


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    seed: int | None = None


class Generator(ABC):
    """Streams text pieces for one model; each call is one request."""

    @abstractmethod
    def chat(self, messages: list[ChatMessage]) -> Iterator[str]:
        """The reply to ``messages`` under the model's chat template."""

    @abstractmethod
    def complete(self, prompt: str) -> Iterator[str]:
        """A plain continuation of ``prompt`` (no chat template)."""

    def close(self) -> None:
        pass


class DaemonGenerator(Generator):
    def __init__(self, client: Client, model: str, sampling: Sampling) -> None:
        self.client, self.model = client, model
        self._params = {"max_tokens": sampling.max_tokens, "temperature": sampling.temperature,
                        "seed": sampling.seed}

    def chat(self, messages: list[ChatMessage]) -> Iterator[str]:
        body = [{"role": m.role, "content": m.content} for m in messages]
        return self.client.chat(self.model, body, stream=True, **self._params)

    def complete(self, prompt: str) -> Iterator[str]:
        return self.client.complete(self.model, prompt, stream=True, **self._params)

    def close(self) -> None:
        self.client.close()


class LocalGenerator(Generator):
    def __init__(self, engine: Engine, adapter: str | None, sampling: Sampling) -> None:
        self.engine, self.adapter = engine, adapter
        self._params = SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                                      seed=sampling.seed)

    def chat(self, messages: list[ChatMessage]) -> Iterator[str]:
        return self._stream(self.engine.encode_chat(messages))

    def complete(self, prompt: str) -> Iterator[str]:
        return self._stream(self.engine.encode(prompt))

    def _stream(self, ids: list[int]) -> Iterator[str]:
        for out in stream(self.engine, ids, self._params, self.adapter):
            if out.text:
                yield out.text
            if out.error:
                raise EngineFailed(out.error)


PROBE_TIMEOUT_S = 30.0  # a daemon that accepts the connection but says nothing is an error, not absent


def open_generator(model: str, sampling: Sampling, url: str | None = None) -> Generator:
    """The daemon's generator when a daemon answers at ``url`` (default: from settings), else a local one."""
    client = Client(url)
    try:
        client.health(timeout=PROBE_TIMEOUT_S)
    except DaemonNotRunning:
        client.close()
        return _local(model, sampling, client.base_url)
    return DaemonGenerator(client, model, sampling)


def _local(name: str, sampling: Sampling, url: str) -> LocalGenerator:
    rt = runtime()
    info = rt.store.registry.get(name)
    if "generate" not in info.manifest.tasks:
        gens = [i.ref for i in rt.store.registry.list(tenant=DEFAULT_TENANT) if "generate" in i.manifest.tasks]
        raise WrongTask(f"{info.ref} cannot generate text (it serves: {', '.join(info.manifest.tasks)}); "
                        f"models that can: {', '.join(gens) or 'none'}")
    base = base_of(rt.store.registry, info)
    unsupported = None if info.manifest.kind != "adapter" else unsupported_lora(read_config(rt.store.registry.snapshot(info)),
                                                             base.manifest.model_type or "")
    kind = place(base.manifest, rt.settings.engine, task="generate", adapter=base is not info, scores=False,
                 adapter_unsupported=unsupported).engine
    with err.status(f"loading {info.ref} in this process on its {kind} engine (no daemon at {url})", spinner="dots"):
        extra = {"lora_cache": rt.settings.lora_gguf_dir} if kind == "llamacpp" else {}
        engine = load_engine(rt.store.registry, info.key, backend=kind, **extra)
    adapter = info.key if info.key in engine.info().adapters else None
    return LocalGenerator(engine, adapter, sampling)
