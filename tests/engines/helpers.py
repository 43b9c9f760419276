"""Drive an engine the way the kernel does: prefill, decode the unfinished, release the finished."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmos.engines.base import Engine
from llmos.engines.types import RequestStatus, SamplingParams, SequenceSpec, StepOutput, TokenLogprobs


@dataclass
class Result:
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    status: RequestStatus = RequestStatus.RUNNING
    logprobs: list[TokenLogprobs] = field(default_factory=list)


def spec(seq_id: str, prompt: list[int], adapter: str | None = None, **params: object) -> SequenceSpec:
    params.setdefault("max_tokens", 8)
    return SequenceSpec(seq_id, list(prompt), SamplingParams(**params), adapter)


def record(results: dict[str, Result], outputs: list[StepOutput]) -> list[str]:
    """Add outputs to results; return the ids that finished."""
    done = []
    for out in outputs:
        res = results.setdefault(out.id, Result())
        res.tokens.append(out.token_id)
        res.text += out.text
        res.status = out.status
        if out.logprobs is not None:
            res.logprobs.append(out.logprobs)
        if out.finished:
            done.append(out.id)
    return done


def run(engine: Engine, specs: list[SequenceSpec], results: dict[str, Result] | None = None) -> dict[str, Result]:
    """Prefill ``specs`` together and decode every live one to the end."""
    results = {} if results is None else results
    live = [s.id for s in specs]
    finished = record(results, engine.prefill(specs))
    while True:
        engine.release(finished)
        live = [i for i in live if i not in finished]
        if not live:
            return results
        finished = record(results, engine.decode(live))


def run_alone(engine: Engine, specs: list[SequenceSpec]) -> dict[str, Result]:
    results: dict[str, Result] = {}
    for s in specs:
        run(engine, [s], results)
    return results


def tokens(results: dict[str, Result]) -> dict[str, list[int]]:
    return {k: v.tokens for k, v in results.items()}
