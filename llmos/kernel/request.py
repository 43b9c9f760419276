"""The kernel's process descriptor for one inference request, and what engines return per step.

Everything here is a plain dataclass of built-in types so that it can cross a process or machine
boundary (pickle, JSON) unchanged: the scheduler reaches an engine only through these types.
"""

from __future__ import annotations

import time
import uuid
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
class SamplingParams:
    """How to pick tokens. ``temperature == 0`` means greedy decoding."""

    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def new_request_id() -> str:
    return "req-" + uuid.uuid4().hex[:24]


@dataclass
class Request:
    """One generation request: the unit the scheduler queues, batches and finishes."""

    model: str
    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    adapter: str | None = None
    tenant: str = "default"
    priority: int = 0  # higher runs first under the priority policy
    id: str = field(default_factory=new_request_id)
    status: RequestStatus = RequestStatus.WAITING
    output_ids: list[int] = field(default_factory=list)
    output_text: str = ""
    arrived: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    finished_at: float | None = None
    error: str | None = None

    @property
    def finish_reason(self) -> str | None:
        return FINISH_REASONS.get(self.status)


@dataclass
class SequenceSpec:
    """What an engine needs to start a sequence: the serialisable part of a Request."""

    id: str
    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None = None

    @classmethod
    def of(cls, req: Request) -> "SequenceSpec":
        return cls(id=req.id, prompt_ids=list(req.prompt_ids), params=req.params, adapter=req.adapter)


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
