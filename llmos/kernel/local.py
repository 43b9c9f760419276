"""In-process generation for the CLI: one sequence through an engine, no daemon, no scheduler."""

from __future__ import annotations

import queue
from collections.abc import Iterator

from llmos.engines.base import Engine
from llmos.kernel.request import new_request_id
from llmos.engines.types import SamplingParams, SequenceSpec, StepOutput


def stream(engine: Engine, prompt_ids: list[int], params: SamplingParams,
           adapter: str | None = None) -> Iterator[StepOutput]:
    """Yield each generated token's StepOutput until the engine finishes the sequence."""
    spec = SequenceSpec(new_request_id(), prompt_ids, params, adapter)
    try:
        if engine.streams:
            yield from _streamed(engine, spec)
            return
        out = engine.prefill([spec])[0]
        yield out
        while not out.finished:
            out = engine.decode([spec.id])[0]
            yield out
    finally:
        engine.release([spec.id])


def _streamed(engine: Engine, spec: SequenceSpec) -> Iterator[StepOutput]:
    outputs: queue.Queue[StepOutput] = queue.Queue()
    engine.start([spec], outputs.put)
    while True:
        out = outputs.get()
        yield out
        if out.finished:
            return
