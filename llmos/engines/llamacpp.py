"""The llama.cpp engine: quantised GGUF models, generation only, streamed by llama.cpp's server loop.

Constrained output (tools, JSON schemas) and log-probabilities run here too, as llama.cpp grammars and
token probabilities (``llamacpp_grammar``); the encoder tasks run on the transformers engine.

LoRA adapters are converted to llama.cpp's LoRA GGUF once (``llamacpp_lora``) and loaded with the
model; each sequence names its own adapter (llama.cpp applies it per request, scale 0 for the rest).
llama.cpp takes its adapter list only when a server context starts, so adding or removing one starts
a new context with the new list: new sequences go to it at once, sequences in flight finish on the
old one, which is closed when its last one ends. The weights are memory-mapped from the same file,
so the two share their pages; only the KV cache is held twice meanwhile.

llama.cpp's server context decodes every live sequence in one batch per step (continuous batching
over slots) in its own thread; this engine starts each sequence the kernel admits as one streamed
completion of token ids and hands every token back through ``emit``. The kernel keeps deciding
which sequences enter and when: it never admits more than the engine's slots, so llama.cpp's own
queue stays empty, and ``release`` stops a sequence at its next token, which frees its slot.
Tokenisation stays at the kernel's front door (the model's own tokenizer and stored chat template),
so both engines see the same prompt ids.
"""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmos.engines.base import ChatMessage, Emit, Engine, EngineInfo, Span
from llmos.engines.llamacpp_grammar import grammar_fields, logprob_fields, token_logprobs
from llmos.engines.llamacpp_lora import cached_gguf
from llmos.engines.llamacpp_server import (
    GgufShape, LlamaServer, ServerConfig, check_architecture, default_threads, kv_bytes, read_shape,
)
from llmos.engines.prompts import chat_prompt_ids
from llmos.errors import Conflict, EngineFailed, InvalidInput, WrongTask
from llmos.engines.types import OutputConstraint, RequestStatus, SamplingParams, SequenceSpec, StepOutput

log = logging.getLogger("llmos.engines.llamacpp")

SPARE_SLOTS = 2  # a released slot frees at its next token: room for the kernel's next admission meanwhile
KV_TOKENS_PER_SLOT = 1024  # cache cells per slot when sizing the cache
KV_PAD = 256  # llama.cpp sizes a slot's cells in multiples of this
KV_LAYOUTS = ("shared", "per-slot")
PROMPT_CACHE_SHARE = 0.5  # host RAM for prompts saved out of idle slots, as a share of the KV cache's size
_FINISH = {"stop": RequestStatus.FINISHED_STOPPED, "length": RequestStatus.FINISHED_LENGTH}


def slot_share(slots: int, kv_tokens: int = 0) -> int:
    """The cells each slot gets with a per-slot KV cache (``kv_tokens`` 0: 1024 each), in llama.cpp's
    steps of 256: the longest request (prompt and answer) such an engine takes."""
    return max((kv_tokens or slots * KV_TOKENS_PER_SLOT) // slots // KV_PAD, 1) * KV_PAD


def find_gguf(folder: Path) -> Path:
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise InvalidInput(f"{folder.name}: no .gguf file, so the llama.cpp engine cannot run it; use the hf engine")
    return found[0]


def request_body(spec: SequenceSpec, lora: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One llama.cpp completion for ``spec``: token ids in, llmos's sampling semantics (temperature,
    top-k, top-p only: llama.cpp's extra samplers such as min-p are switched off). ``lora``: the
    adapters applied to it, by their index in the server's list (``[]``: the bare base).

    llama.cpp reuses a slot's cached prompt without comparing the adapters it was computed with
    (measured: a base sequence after an adapter's on the same prompt decoded from the adapter's
    cache), so a context holding adapters never reuses prompt caches."""
    p: SamplingParams = spec.params
    body: dict[str, Any] = {
        "prompt": list(spec.prompt_ids), "max_tokens": p.max_tokens, "stream": True,
        "temperature": max(p.temperature, 0.0), "top_p": p.top_p, "top_k": p.top_k, "min_p": 0.0,
        "typical_p": 1.0, "repeat_penalty": 1.0, "cache_prompt": True,
    }
    if p.stop:
        body["stop"] = list(p.stop)
    if p.seed is not None:
        body["seed"] = p.seed
    if p.constraint is not None:
        body.update(grammar_fields(p.constraint))
    if lora is not None:
        body["lora"], body["cache_prompt"] = lora, False
    return body | logprob_fields(p.logprobs)


class _Stream:
    """One sequence in flight: turns llama.cpp's chunks into StepOutputs, stops when released."""

    def __init__(self, spec: SequenceSpec, emit: Emit, server: LlamaServer, lora: list[dict[str, Any]] | None) -> None:
        self.spec = spec
        self.emit = emit
        self.server = server  # the context it runs in (an older one while that one drains)
        self.lora = lora
        self.released = threading.Event()
        self.tokens = 0
        self.done = False

    def on_chunk(self, chunk: dict[str, Any]) -> bool:
        """The binding's callback: True asks llama.cpp to stop this sequence (and free its slot)."""
        if self.released.is_set() or self.done:
            return True
        if "error" in chunk or "choices" not in chunk:
            self.fail(_error_message(chunk))
            return True
        choice = chunk["choices"][0]
        text, reason = choice.get("text") or "", choice.get("finish_reason")
        entries = token_logprobs(choice, self.spec.params.logprobs)
        if reason is None or entries:  # tokens, each with its log-probabilities when asked for
            for i, lp in enumerate(entries or [None]):
                self.tokens += 1
                self.emit(StepOutput(self.spec.id, -1, text if i == 0 else "", logprobs=lp))
            text = ""
        if reason is None:
            return False
        used = int((chunk.get("usage") or {}).get("completion_tokens", self.tokens))
        self.done = True
        status = _FINISH.get(reason, RequestStatus.FINISHED_STOPPED)
        self.emit(StepOutput(self.spec.id, -1, text, True, status, tokens=max(used - self.tokens, 0)))
        return True

    def fail(self, message: str) -> None:
        if not self.done and not self.released.is_set():
            self.done = True
            self.emit(StepOutput(self.spec.id, -1, "", True, RequestStatus.FINISHED_ERROR, message, tokens=0))


def _error_message(chunk: dict[str, Any]) -> str:
    err = chunk.get("error", chunk)
    message = err.get("message") if isinstance(err, dict) else str(err)
    return f"llama.cpp: {message or chunk}"


class LlamaCppEngine(Engine):
    """One GGUF model in a llama.cpp server context (see the module docstring)."""

    streams = True

    def __init__(self, path: str | Path, *, name: str, tasks: list[str] | None = None,
                 chat_template: str | None = None, max_batch_size: int = 16, threads: int = 0,
                 kv_tokens: int = 0, context_length: int | None = None, lora_cache: str | Path | None = None,
                 gpu_layers: int = 0, main_gpu: int = 0, kv_layout: str = "shared", **_: object) -> None:
        if kv_layout not in KV_LAYOUTS:
            raise InvalidInput(f"unknown KV layout {kv_layout!r}; one of: {', '.join(KV_LAYOUTS)}")
        folder = Path(path)
        self.name = name
        self.gguf = find_gguf(folder)
        self.shape: GgufShape = read_shape(self.gguf)
        check_architecture(self.gguf, self.shape.architecture)
        self.tasks = [t for t in (tasks or ["generate"]) if t == "generate"]
        self.context_length = min(context_length or self.shape.context_length, self.shape.context_length)
        self.slots = max_batch_size + SPARE_SLOTS
        per_slot = kv_layout == "per-slot"
        kv = kv_tokens or max(self.context_length, self.slots * KV_TOKENS_PER_SLOT)
        if per_slot:  # a request fits in its slot's share or is refused
            share = slot_share(self.slots, kv_tokens)
            kv, self.context_length = share * self.slots, min(self.context_length, share)
        self._tokenizer, self._chat_template = _tokenizer(folder), chat_template
        self._kv_bytes = kv_bytes(self.shape, kv)
        self._config = ServerConfig(self.gguf, self.slots, kv, threads or default_threads(), gpu_layers=gpu_layers,
                                    main_gpu=main_gpu, per_slot=per_slot,
                                    prompt_cache_mib=math.ceil(self._kv_bytes * PROMPT_CACHE_SHARE / 2**20))
        self._server: LlamaServer | None = LlamaServer(self._config)
        self._lora_cache = Path(lora_cache) if lora_cache is not None else None
        self._adapters: dict[str, tuple[str, Path]] = {}  # name -> (its folder, its LoRA GGUF), in server order
        self._draining: list[LlamaServer] = []  # older contexts still finishing their sequences
        self._streams: dict[str, _Stream] = {}
        self._checked: set[tuple[str, str, str, str]] = set()  # constraints llama.cpp has parsed
        self._lock = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix=f"llama-{name}")

    # -- what it is ------------------------------------------------------------------------------
    def info(self) -> EngineInfo:
        return EngineInfo(self.name, list(self.tasks), self.context_length, self.footprint(), sorted(self._adapters))

    def footprint(self) -> int:
        if self._server is None:
            return 0
        loras = sum(path.stat().st_size for _, path in self._adapters.values())
        per_context = self._kv_bytes + self._config.prompt_cache_mib * 2**20
        return self.gguf.stat().st_size + per_context * (1 + len(self._draining)) + loras

    def encode(self, text: str) -> list[int]:
        return list(self._require_tokenizer().encode(text))

    def encode_chat(self, messages: list[ChatMessage]) -> list[int]:
        return chat_prompt_ids(self._require_tokenizer(), self._chat_template, messages, self.name)

    def _require_tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise WrongTask(f"model {self.name} has no tokenizer files beside its GGUF")
        return self._tokenizer

    # -- generation ------------------------------------------------------------------------------
    def start(self, seqs: list[SequenceSpec], emit: Emit) -> None:
        with self._lock:
            server, order = self._require(), list(self._adapters)
        for spec in seqs:
            if spec.adapter is not None and spec.adapter not in order:
                raise InvalidInput(f"unknown adapter {spec.adapter!r}; loaded adapters: {', '.join(order) or 'none'}")
        for spec in seqs:
            lora = None if not order else [] if spec.adapter is None else [{"id": order.index(spec.adapter), "scale": 1.0}]
            stream = _Stream(spec, emit, server, lora)
            with self._lock:  # past the slots (released ones not yet freed), llama.cpp queues it briefly
                self._streams[spec.id] = stream
            self._pool.submit(self._run, stream)

    def _run(self, stream: _Stream) -> None:
        try:
            if not stream.released.is_set():
                stream.server.complete(request_body(stream.spec, stream.lora), stream.on_chunk)
            if not stream.done:
                stream.fail("llama.cpp ended the sequence without a final answer")
        except Exception as exc:  # noqa: BLE001 - the failure belongs to this sequence only
            log.exception("llama.cpp engine %s: sequence %s failed", self.name, stream.spec.id)
            stream.fail(f"llama.cpp: {exc}")
        finally:
            with self._lock:
                self._streams.pop(stream.spec.id, None)
                done = self._drained(stream.server)
                self._lock.notify_all()
            if done is not None:
                done.close()

    def _drained(self, server: LlamaServer) -> LlamaServer | None:
        """``server`` when it is an older context and no sequence runs on it any more (lock held)."""
        if server in self._draining and not any(s.server is server for s in self._streams.values()):
            self._draining.remove(server)
            return server
        return None

    def check_constraint(self, constraint: OutputConstraint) -> None:
        """The schema is read by xgrammar, then llama.cpp parses the grammar in a one-token completion,
        so a constraint it would refuse is an InvalidInput now, never a failed sequence later."""
        fields = grammar_fields(constraint)
        if constraint.key in self._checked:
            return
        refused: list[str] = []

        def on_chunk(chunk: dict[str, Any]) -> bool:
            if "error" in chunk or "choices" not in chunk:
                refused.append(_error_message(chunk))
            return True

        self._require().complete({"prompt": " ", "max_tokens": 1, "stream": True, **fields}, on_chunk)
        if refused:
            raise InvalidInput(f"the JSON schema cannot be enforced: {refused[0]}", param="response_format")
        if len(self._checked) >= 4096:
            self._checked.clear()
        self._checked.add(constraint.key)

    def release(self, ids: list[str]) -> None:
        with self._lock:
            for i in ids:
                stream = self._streams.get(i)
                if stream is not None:
                    stream.released.set()

    @property
    def live(self) -> int:
        """Sequences whose llama.cpp slot is still held (a released one until its next token)."""
        with self._lock:
            return len(self._streams)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no slot is held (every sequence ended or stopped after ``release``)."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._streams, timeout)

    def prefill(self, seqs: list[SequenceSpec]) -> list[StepOutput]:
        raise WrongTask("the llama.cpp engine streams sequences itself; use start()")

    def decode(self, ids: list[str]) -> list[StepOutput]:
        raise WrongTask("the llama.cpp engine streams sequences itself; use start()")

    # -- adapters ------------------------------------------------------------------------------
    def add_adapter(self, name: str, path: str) -> None:
        """Convert the PEFT LoRA folder at ``path`` (once; cached) and start a context that has it.
        InvalidInput when llama.cpp cannot serve it or it does not fit this model."""
        if name in self._adapters:
            if self._adapters[name][0] == str(path):
                return
            raise Conflict(f"adapter {name!r} is already loaded from {self._adapters[name][0]}; remove it first")
        if self._lora_cache is None:
            raise WrongTask(f"the llama.cpp engine of {self.name} has no folder for converted adapters")
        gguf = cached_gguf(Path(path), self.gguf, self._lora_cache, adapter=name)
        self._restart({**self._adapters, name: (str(path), gguf)})

    def remove_adapter(self, name: str) -> None:
        if name in self._adapters:
            self._restart({k: v for k, v in self._adapters.items() if k != name})

    def _restart(self, adapters: dict[str, tuple[str, Path]]) -> None:
        """A new context with ``adapters``; the current one drains (see the module docstring)."""
        self._require()
        fresh = LlamaServer(replace(self._config, loras=tuple(gguf for _, gguf in adapters.values())))
        with self._lock:
            old, self._server, self._adapters = self._server, fresh, adapters
            self._draining.append(old)
            idle = self._drained(old)
        if idle is not None:
            idle.close()

    # -- what it does not do ---------------------------------------------------------------------
    def embed(self, texts: list[str], *, adapter: str | None = None) -> list[list[float]]:
        raise WrongTask(f"the llama.cpp engine of {self.name} only generates")

    def classify(self, texts: list[str], *, adapter: str | None = None) -> list[dict[str, float]]:
        raise WrongTask(f"the llama.cpp engine of {self.name} only generates")

    def tag(self, texts: list[str], *, adapter: str | None = None) -> list[list[Span]]:
        raise WrongTask(f"the llama.cpp engine of {self.name} only generates")

    def _require(self) -> LlamaServer:
        if self._server is None:
            raise EngineFailed(f"engine {self.name} is closed")
        return self._server

    def close(self) -> None:
        if self._server is None:
            return
        with self._lock:
            for stream in self._streams.values():
                stream.released.set()
        self._pool.shutdown(wait=True)
        server, self._server = self._server, None
        for older in [*self._draining, server]:
            older.close()
        self._draining = []


def _tokenizer(folder: Path) -> Any:
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)
