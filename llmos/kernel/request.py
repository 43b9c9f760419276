"""The kernel's process descriptor for one inference request.

A Request carries what the scheduler needs (tenant, priority, timings); an engine sees only the
``SequenceSpec`` made from it (``llmos.engines.types``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from llmos.engines.types import FINISH_REASONS, RequestStatus, SamplingParams, SequenceSpec


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
    background: bool = False  # batch work: not interactive load for the co-scheduler, not in TTFT samples
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

    def spec(self) -> SequenceSpec:
        """The serialisable part an engine needs to start this sequence."""
        return SequenceSpec(id=self.id, prompt_ids=list(self.prompt_ids), params=self.params,
                            adapter=self.adapter)
