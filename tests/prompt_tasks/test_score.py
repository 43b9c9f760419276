"""Engine.score on the real SmolLM2: the shared-prefix scoring equals scoring each sequence whole."""

from __future__ import annotations

import pytest
import torch

from llmos.engines.loader import load_engine
from llmos.errors import InvalidInput, WrongTask
from llmos.runtime import Runtime

SMOL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def engine(builtin_runtime: Runtime):  # type: ignore[no-untyped-def]
    e = load_engine(builtin_runtime.store.registry, SMOL, max_batch_size=2)
    yield e
    e.close()


def _whole(engine, ctx: list[int], cont: list[int]) -> list[float]:  # type: ignore[no-untyped-def]
    """The reference: one unpadded forward over context + continuation."""
    model = engine._adapters.model  # noqa: SLF001 - the reference needs the raw model
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ctx + cont])).logits[0].float().log_softmax(-1)
    return [logits[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont)]


@pytest.mark.slow
def test_score_matches_whole_sequence_forward(engine) -> None:  # type: ignore[no-untyped-def]
    texts = ["it 's a charming and often affecting journey .", "unflinchingly bleak and desperate",
             "the acting , costumes , music , cinematography and sound are all astounding"]
    contexts = [engine.encode(f"Review: {t}\nSentiment:") for t in texts]  # 3 rows: two batches of max 2
    answers = [engine.encode(" positive"), engine.encode(" mixed feelings overall")]
    got = engine.score(contexts, answers)
    assert len(got) == 3 and all(len(row) == 2 for row in got)
    for ctx, row in zip(contexts, got):
        for cont, values in zip(answers, row):
            assert values == pytest.approx(_whole(engine, ctx, cont), abs=2e-3)


def test_score_refuses_bad_input(engine, builtin_runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput):
        engine.score([[1, 2]], [[]])
    with pytest.raises(InvalidInput):
        engine.score([[1, 10**9]], [[3]])
    encoder = load_engine(builtin_runtime.store.registry, "minilm-l6")
    try:
        with pytest.raises(WrongTask):
            encoder.score([[1, 2]], [[3]])
    finally:
        encoder.close()
