"""The engine contract's data: what the kernel hands an engine and what an engine returns per step.

Everything here is a plain dataclass of built-in types so that it can cross a process or machine
boundary (pickle, JSON) unchanged: the kernel reaches an engine only through these types, and engines
never import the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class RequestStatus(IntEnum):
    """Life cycle of a request inside the kernel."""

    WAITING = 0  # queued, not yet admitted to a batch
    RUNNING = 1  # admitted: prefilled, decoding
    FINISHED_STOPPED = 2  # end-of-sequence token or a stop string
    FINISHED_LENGTH = 3  # max_tokens reached
    FINISHED_ABORTED = 4  # cancelled (client went away) or shut down
    FINISHED_ERROR = 5  # the engine failed for this request

    @property
    def finished(self) -> bool:
        return self >= RequestStatus.FINISHED_STOPPED


FINISH_REASONS: dict[RequestStatus, str] = {
    RequestStatus.FINISHED_STOPPED: "stop",
    RequestStatus.FINISHED_LENGTH: "length",
    RequestStatus.FINISHED_ABORTED: "abort",
    RequestStatus.FINISHED_ERROR: "error",
}
"""The OpenAI-style ``finish_reason`` for each finished status."""


@dataclass
class OutputConstraint:
    """The output must be ``prefix``, then one JSON value valid against ``json_schema``, then ``suffix``.

    With a ``trigger`` (a start of ``prefix``) the output is free text instead, but wherever it writes
    the trigger, the rest of ``prefix``, a valid JSON value and ``suffix`` must follow: a tool call
    inside a free reply (llama.cpp calls this a lazy grammar).

    ``json_schema`` is the schema as canonical JSON text (``llmos.engines.constrain`` builds these), so
    equal constraints compare and hash equal and an engine can cache what it compiles from one. Each
    engine turns it into its own grammar (xgrammar for transformers; a GBNF grammar for llama.cpp).
    """

    json_schema: str
    prefix: str = ""
    suffix: str = ""
    trigger: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.prefix, self.json_schema, self.suffix, self.trigger)


@dataclass
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` means greedy decoding.

    ``constraint``: a grammar every output must follow (masks the logits before any sampling).
    ``logprobs``: None for none; ``k >= 0`` returns each token's log-probability plus the ``k`` likeliest
    alternatives (log-softmax of the model's own logits, before temperature and constraints).
    """

    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    constraint: OutputConstraint | None = None
    logprobs: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class SequenceSpec:
    """What an engine needs to start a sequence: the serialisable part of a Request."""

    id: str
    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None = None


@dataclass
class TokenLogprob:
    """One token and its log-probability. ``bytes`` are its raw UTF-8 bytes; ``token`` is their text, or
    ``\\xNN`` escapes where the token holds part of a multi-byte character."""

    token: str
    bytes: list[int]
    logprob: float

    @classmethod
    def of(cls, raw: bytes, logprob: float) -> TokenLogprob:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = "".join(f"\\x{b:02x}" for b in raw)
        return cls(text, list(raw), logprob)


@dataclass
class TokenLogprobs:
    """The chosen token's log-probability and the likeliest alternatives at its position."""

    chosen: TokenLogprob
    top: list[TokenLogprob] = field(default_factory=list)


@dataclass
class StepOutput:
    """One new token for one sequence, produced by an engine's prefill or decode step.

    ``text`` is the text this token adds (may be empty while a multi-byte character is incomplete).
    ``finished`` is set by the engine when it stops the sequence itself (EOS, a stop string, max_tokens,
    the context limit, or an error); ``status`` then says which.
    ``tokens`` is how many generated tokens the output stands for: 1 for a step engine; a streaming
    engine may end a sequence with an output that carries text held back for a stop string, or none
    (0), and its ``token_id`` is -1 where the binding does not report ids.
    """

    id: str
    token_id: int
    text: str = ""
    finished: bool = False
    status: RequestStatus = RequestStatus.RUNNING
    error: str | None = None
    tokens: int = 1
    logprobs: TokenLogprobs | None = None  # when the sequence asked for them; never for end-of-sequence
