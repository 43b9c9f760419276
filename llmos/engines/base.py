"""The engine contract: one loaded model (plus its adapters) on one device.

The scheduler decides what runs; an engine only executes what it is told. Every argument and result
is a dataclass of built-in types (see ``llmos.engines.types``), so an engine may live in another
process or on another machine behind the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from llmos.errors import InvalidInput, WrongTask
from llmos.engines.chat import ToolCall
from llmos.engines.types import OutputConstraint, RequestStatus, SequenceSpec, StepOutput

Emit = Callable[[StepOutput], None]
"""Where a streaming engine hands each output (see ``Engine.start``)."""


@dataclass
class Span:
    """An entity found by ``tag``: character offsets into the input text (end exclusive)."""

    start: int
    end: int
    label: str
    text: str
    score: float


@dataclass
class ChatMessage:
    """One turn. An assistant turn may carry the tool calls it made; a ``tool`` turn answers one
    of them (``tool_call_id``)."""

    role: str
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None


@dataclass
class EngineInfo:
    """What a loaded engine can do; cheap to ask, serialisable."""

    model: str
    tasks: list[str]  # subset of: generate, embed, classify, tag
    context_length: int
    footprint_bytes: int
    adapters: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # classify / tag label names, if any


class Engine(ABC):
    """Executes one model. Methods are called from ONE kernel thread at a time.

    Generation is split into steps so the kernel can batch at iteration level:

    - ``prefill(seqs)`` adds new sequences to the engine's live batch and returns the first token
      of each (one StepOutput per sequence, in input order).
    - ``decode(ids)`` produces the next token for each named live sequence (one StepOutput each,
      in input order). Sequences prefilled in different calls may be decoded together, and
      sequences for different adapters of the same base run in one forward pass.
    - ``release(ids)`` drops sequences and frees their cache; it must accept ids that already
      finished or were never known.

    The engine marks a StepOutput finished when the sequence hits end-of-sequence, a stop string,
    ``max_tokens`` or the context limit; the kernel then releases it. An engine never chooses
    which sequences run next.

    An engine whose binding runs its own decode loop (llama.cpp's server context) sets ``streams``
    and implements ``start`` instead of ``prefill`` / ``decode``: the kernel still decides which
    sequences enter and when (at most its batch size at once); the engine streams their tokens back.
    """

    streams: bool = False
    """True: generation goes through ``start``; ``prefill`` / ``decode`` are not used."""

    @abstractmethod
    def info(self) -> EngineInfo: ...

    @abstractmethod
    def footprint(self) -> int:
        """Bytes of memory the engine holds now (weights, adapters, caches)."""

    # -- tokenisation -------------------------------------------------------------------------
    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def encode_chat(self, messages: list[ChatMessage]) -> list[int]:
        """Prompt ids for a chat, built with the chat template stored with the model."""

    # -- adapters -----------------------------------------------------------------------------
    @abstractmethod
    def add_adapter(self, name: str, path: str) -> None:
        """Load a LoRA adapter from a folder onto this (already loaded) base model."""

    @abstractmethod
    def remove_adapter(self, name: str) -> None: ...

    # -- generation ---------------------------------------------------------------------------
    @abstractmethod
    def prefill(self, seqs: list[SequenceSpec]) -> list[StepOutput]: ...

    @abstractmethod
    def decode(self, ids: list[str]) -> list[StepOutput]: ...

    @abstractmethod
    def release(self, ids: list[str]) -> None: ...

    def start(self, seqs: list[SequenceSpec], emit: Emit) -> None:
        """Streaming engines: begin generating each sequence and return at once.

        ``emit`` is then called from the engine's own threads with each sequence's outputs, in order;
        the last one is ``finished``. After ``release(ids)`` the engine frees those sequences' slots
        and emits nothing more for them. ``start`` must be called with no more sequences in flight
        than the batch size the engine was built for.
        """
        raise WrongTask(f"engine {type(self).__name__} runs generation as prefill / decode steps")

    # -- encoder tasks ------------------------------------------------------------------------
    @abstractmethod
    def embed(self, texts: list[str], *, adapter: str | None = None) -> list[list[float]]:
        """Mean-pooled, L2-normalised sentence embeddings."""

    @abstractmethod
    def classify(self, texts: list[str], *, adapter: str | None = None) -> list[dict[str, float]]:
        """Label -> probability for each text."""

    @abstractmethod
    def tag(self, texts: list[str], *, adapter: str | None = None) -> list[list[Span]]:
        """Entity spans with character offsets for each text."""

    def score(self, contexts: list[list[int]], continuations: list[list[int]], *,
              adapter: str | None = None) -> list[list[list[float]]]:
        """``[i][j]``: the log-probability of each token of ``continuations[j]`` right after ``contexts[i]``.

        Generators implement it (prompt-defined classifiers score their labels with it: every label
        after every input); the default says the engine cannot.
        """
        raise WrongTask(f"engine {type(self).__name__} cannot score continuations")

    def check_constraint(self, constraint: OutputConstraint) -> None:
        """Prepare ``constraint`` for sequences that will carry it (compile and cache its grammar);
        raise InvalidInput with the grammar library's message when it cannot be enforced.

        The default says the engine cannot constrain its output at all.
        """
        raise InvalidInput(f"engine {type(self).__name__} cannot constrain its output (response_format, "
                           "tool_choice required or a named function)")

    def alive(self) -> bool:
        """False once the engine can never answer again (its node died): the kernel places the model
        anew. An in-process engine is alive until closed."""
        return True

    def close(self) -> None:
        """Free everything; the engine is unusable afterwards."""


class FakeEngine(Engine):
    """A deterministic engine for scheduler and API tests: no model, no tensors.

    Sequence ``s`` emits tokens ``1, 2, 3, ...`` (text ``"t1 t2 ..."``) and stops at ``max_tokens``
    or when ``eos_after`` tokens were produced. Every call is recorded in ``calls`` so tests can
    assert how the kernel batched work.
    """

    def __init__(
        self,
        name: str = "fake",
        *,
        footprint_bytes: int = 1_000,
        context_length: int = 2048,
        eos_after: int | None = None,
        tasks: tuple[str, ...] = ("generate", "embed", "classify", "tag"),
    ) -> None:
        self.name = name
        self._footprint = footprint_bytes
        self._context = context_length
        self._eos_after = eos_after
        self._tasks = list(tasks)
        self._live: dict[str, tuple[SequenceSpec, int]] = {}
        self.adapters: dict[str, str] = {}
        self.calls: list[tuple[str, list[str]]] = []
        self.closed = False

    def info(self) -> EngineInfo:
        return EngineInfo(self.name, self._tasks, self._context, self._footprint, sorted(self.adapters))

    def footprint(self) -> int:
        return self._footprint

    def encode(self, text: str) -> list[int]:
        return [len(w) for w in text.split()] or [0]

    def encode_chat(self, messages: list[ChatMessage]) -> list[int]:
        return self.encode(" ".join(m.content for m in messages))

    def add_adapter(self, name: str, path: str) -> None:
        self.adapters[name] = path

    def remove_adapter(self, name: str) -> None:
        self.adapters.pop(name, None)

    def _emit(self, seq_id: str) -> StepOutput:
        spec, produced = self._live[seq_id]
        produced += 1
        self._live[seq_id] = (spec, produced)
        status = RequestStatus.RUNNING
        if self._eos_after is not None and produced >= self._eos_after:
            status = RequestStatus.FINISHED_STOPPED
        elif produced >= spec.params.max_tokens:
            status = RequestStatus.FINISHED_LENGTH
        return StepOutput(seq_id, produced, f"t{produced} ", status.finished, status)

    def prefill(self, seqs: list[SequenceSpec]) -> list[StepOutput]:
        self.calls.append(("prefill", [s.id for s in seqs]))
        for s in seqs:
            if s.adapter is not None and s.adapter not in self.adapters:
                raise KeyError(f"unknown adapter {s.adapter!r}")
            self._live[s.id] = (s, 0)
        return [self._emit(s.id) for s in seqs]

    def decode(self, ids: list[str]) -> list[StepOutput]:
        self.calls.append(("decode", list(ids)))
        return [self._emit(i) for i in ids]

    def release(self, ids: list[str]) -> None:
        for i in ids:
            self._live.pop(i, None)

    @property
    def live(self) -> list[str]:
        return list(self._live)

    def embed(self, texts: list[str], *, adapter: str | None = None) -> list[list[float]]:
        return [[float(len(t)), 1.0] for t in texts]

    def classify(self, texts: list[str], *, adapter: str | None = None) -> list[dict[str, float]]:
        return [{"positive": 0.5, "negative": 0.5} for _ in texts]

    def tag(self, texts: list[str], *, adapter: str | None = None) -> list[list[Span]]:
        return [[] for _ in texts]

    def check_constraint(self, constraint: OutputConstraint) -> None:
        """Accepts any constraint and enforces none: API tests of tools and formats see the fake's tokens."""
        self.calls.append(("check_constraint", [constraint.json_schema]))

    def close(self) -> None:
        self.closed = True
        self._live.clear()
