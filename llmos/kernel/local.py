"""In-process generation for the CLI: one sequence through an engine, no daemon, no scheduler."""

from __future__ import annotations

from collections.abc import Iterator

from llmos.engines.base import Engine
from llmos.kernel.request import new_request_id
from llmos.engines.types import SamplingParams, SequenceSpec, StepOutput


def stream(engine: Engine, prompt_ids: list[int], params: SamplingParams,
           adapter: str | None = None) -> Iterator[StepOutput]:
    """Yield each generated token's StepOutput until the engine finishes the sequence."""
    spec = SequenceSpec(new_request_id(), prompt_ids, params, adapter)
    try:
        out = engine.prefill([spec])[0]
        yield out
        while not out.finished:
            out = engine.decode([spec.id])[0]
            yield out
    finally:
        engine.release([spec.id])
