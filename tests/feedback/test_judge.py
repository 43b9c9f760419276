"""The optional judge of the generation gate: a stored chat model (here the real SmolLM2) reads a
code_alpaca request and two answers in both orders; the policy refuses a judge that is no chat model;
the gate vetoes a candidate the judge confidently finds worse and says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos.errors import InvalidInput
from llmos.feedback.gate import decide
from llmos.data.rows import SftRow
from llmos.feedback.judge import check_judge, judge_gate, preferences, verdict
from llmos.feedback.policy import LoopSettings
from llmos.train.loading import load_trained
from llmos.train.report import EvalReport
from tests.feedback.conftest import LoopHome
from tests.train.conftest import MINILM, SMOL


@pytest.fixture(scope="module")
def code(datasets: Path) -> list[dict[str, str]]:
    rows = json.loads((datasets / "code_alpaca_2k/code_alpaca_2k.json").read_text())
    return [r for r in rows if not r["input"] and len(r["instruction"]) + len(r["output"]) < 160][:4]


def test_the_judge_must_be_a_stored_chat_model(home: LoopHome) -> None:
    home.add_builtin(SMOL)
    home.add_builtin(MINILM)
    reg = home.rt.store.registry
    assert LoopSettings.parse({"judge": SMOL}).judge == SMOL  # a setting like any other now
    assert check_judge(reg, SMOL, "default").name == SMOL.split(":")[0]
    with pytest.raises(InvalidInput, match="not a stored model") as missing:
        check_judge(reg, "no-such-judge", "default")
    assert missing.value.details["param"] == "judge"
    with pytest.raises(InvalidInput, match="is not a chat model"):
        check_judge(reg, MINILM, "default")


@pytest.mark.slow
def test_the_judge_reads_both_orders_so_swapping_the_versions_mirrors_its_preference(
        home: LoopHome, code: list[dict[str, str]]) -> None:
    home.add_builtin(SMOL)
    judge = load_trained(home.rt.store.registry, home.rt.store.registry.get(SMOL).key)
    asks = [r["instruction"] for r in code]
    right = [r["output"] for r in code]
    wrong = ["I do not know."] * len(code)
    ahead = preferences(judge.model, judge.tokenizer, judge.chat_template, asks, right, wrong, batch_size=4)
    behind = preferences(judge.model, judge.tokenizer, judge.chat_template, asks, wrong, right, batch_size=2)
    assert len(ahead) == len(code) and all(0.0 < p < 1.0 for p in ahead)
    assert behind == pytest.approx([1 - p for p in ahead], abs=1e-4)  # position bias cancels; batching does not matter
    same = preferences(judge.model, judge.tokenizer, judge.chat_template, asks[:2], right[:2], right[:2])
    assert same == pytest.approx([0.5, 0.5], abs=1e-4)  # two equal answers: no preference


def sft(chrf: list[float], answers: list[str]) -> EvalReport:
    return EvalReport(task="sft", rows=len(chrf), generated_rows=len(chrf), per_row=chrf, answers=answers,
                      metrics={"chrf": sum(chrf) / len(chrf), "loss": 1.0})


def test_a_judge_that_confidently_prefers_the_serving_answers_vetoes_the_candidate() -> None:
    cand = {"feedback": sft([0.6] * 20, ["a"] * 20)}
    serv = {"feedback": sft([0.3] * 20, ["b"] * 20)}
    counts = {"feedback": 20}
    plain = decide("loss", cand, serv, counts, margin=0.01, val_tolerance=0.0)
    assert plain.passed and plain.judge is None
    against = verdict("smollm2-135m-instruct", [0.2, 0.3, 0.25, 0.35] * 5, confidence=0.9, seed=0)
    assert against.prefers_serving and against.preference == pytest.approx(0.275) and against.upper < 0.5
    vetoed = decide("loss", cand, serv, counts, margin=0.01, val_tolerance=0.0, judged=against)
    assert not vetoed.passed and "finds the serving version's answers better" in vetoed.reason
    assert vetoed.judge_rows == 20 and vetoed.judge_preference == pytest.approx(0.275)
    unsure = verdict("smollm2-135m-instruct", [0.2, 0.8] * 10, confidence=0.9, seed=0)
    assert not unsure.prefers_serving  # an even split is no evidence against the candidate
    kept = decide("loss", cand, serv, counts, margin=0.01, val_tolerance=0.0, judged=unsure)
    assert kept.passed and "judge smollm2-135m-instruct" in kept.reason and kept.judge_upper > 0.5


@pytest.mark.slow
def test_the_gate_judges_the_rows_both_versions_answered(home: LoopHome, code: list[dict[str, str]]) -> None:
    """``judge_gate`` pairs each held-out request with both reports' answers (the generated rows only),
    loads the judge from the store and returns its verdict; reports without answers give no rows."""
    home.add_builtin(SMOL)
    rows = [SftRow(instruction=r["instruction"], output=r["output"], split="test") for r in code]
    right = sft([0.9] * 3, [r["output"] for r in code[:3]])  # three of four rows generated
    wrong = sft([0.1] * 3, ["I do not know."] * 3)
    split = {"feedback": rows}
    judged = judge_gate(home.rt.store.registry, SMOL, "default", split, {"feedback": right}, {"feedback": wrong},
                        ["feedback", "validation"], confidence=0.9, seed=0)
    mirrored = judge_gate(home.rt.store.registry, SMOL, "default", split, {"feedback": wrong}, {"feedback": right},
                          ["feedback"], confidence=0.9, seed=0)
    assert judged.rows == mirrored.rows == 3 and judged.judge == SMOL
    assert judged.preference == pytest.approx(1 - mirrored.preference, abs=1e-4)
    bare = EvalReport(task="sft", rows=4, metrics={"chrf": 0.5})  # an old report: no answers kept
    assert judge_gate(home.rt.store.registry, SMOL, "default", split, {"feedback": bare}, {"feedback": bare},
                      ["feedback"], confidence=0.9, seed=0).rows == 0
