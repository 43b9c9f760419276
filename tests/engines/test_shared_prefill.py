"""A request's n choices share one prompt: prefilled once, copied, and then each its own sequence."""

from __future__ import annotations

from llmos.engines.hf import HFEngine

from .helpers import run, run_alone, spec


def test_equal_prompts_prefilled_together_match_each_run_alone(smol_engine: HFEngine) -> None:
    prompt = smol_engine.encode("Once upon a time, in a small village,")
    other = smol_engine.encode("The capital of Italy is")
    specs = [spec(f"c{i}", prompt, max_tokens=6, temperature=1.0, seed=i, logprobs=0) for i in range(3)]
    specs.append(spec("other", other, max_tokens=6))
    together = run(smol_engine, specs)
    alone = run_alone(smol_engine, specs)
    assert {k: v.tokens for k, v in together.items()} == {k: v.tokens for k, v in alone.items()}
    assert len({tuple(together[f"c{i}"].tokens) for i in range(3)}) > 1  # copies, yet each samples its own way
    first = [together[f"c{i}"].logprobs[0].chosen for i in range(3)]
    assert [round(t.logprob, 4) for t in first] == [round(alone[f"c{i}"].logprobs[0].chosen.logprob, 4)
                                                   for i in range(3)]
