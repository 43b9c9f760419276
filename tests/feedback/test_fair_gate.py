"""The fair gate's verdicts: both versions' per-row scores on the same held-out rows (corrections, confirmed
answers, the root validation split), judged by the lower confidence bound of the paired gain.

The reports are made by the same scoring functions real evaluations use (``score_classes``, the sft
report's fields) over Banking77 texts; which rows each version gets right is set by the test, so the
right verdict is known."""

from __future__ import annotations

from pathlib import Path

from llmos.feedback.gate import decide
from llmos.train.evaluate import score_classes
from llmos.train.report import EvalReport
from tests.feedback.conftest import INTENTS, banking_slices


def answers(gold: list[str], right: list[bool]) -> list[str]:
    """Guesses that are right where ``right`` says, else the next intent."""
    return [g if ok else INTENTS[(INTENTS.index(g) + 1) % len(INTENTS)] for g, ok in zip(gold, right)]


def reports(gold: dict[str, list[str]], right: dict[str, list[bool]]) -> dict[str, EvalReport]:
    return {split: score_classes(gold[split], answers(gold[split], right[split]), INTENTS) for split in gold}


def test_the_serving_versions_own_mistakes_alone_no_longer_pass_any_candidate(datasets: Path) -> None:
    s = banking_slices(datasets)
    corrections = [c for _, c in s.traffic[:20]]  # what the serving version got wrong, corrected
    confirmed = [c for _, c in s.traffic[20:60]]  # answers users gave a thumbs-up: the serving version was right
    validation = [c for _, c in s.validation]
    serving = reports({"feedback": corrections + confirmed, "validation": validation},
                      {"feedback": [False] * 20 + [True] * 40, "validation": [True] * 40})
    # a candidate that fixes 6 of the 20 mistakes but breaks 12 confirmed answers and 6 validation rows
    broken = reports({"feedback": corrections + confirmed, "validation": validation},
                     {"feedback": [True] * 6 + [False] * 14 + [False] * 12 + [True] * 28,
                      "validation": [False] * 6 + [True] * 34})
    counts = {"feedback": 60, "validation": 40}
    verdict = decide("accuracy", broken, serving, counts, margin=0.01, val_tolerance=0.05)
    assert not verdict.passed and "lower bound" in verdict.reason and verdict.gain is not None and verdict.gain < 0
    # on the corrections alone (the old held-out set) it looked +0.30 better
    assert sum(broken["feedback"].per_row[:20]) / 20 == 0.3 and sum(serving["feedback"].per_row[:20]) == 0

    # a candidate that fixes 15 of the mistakes and keeps the rest passes, with its bound recorded
    good = reports({"feedback": corrections + confirmed, "validation": validation},
                   {"feedback": [True] * 15 + [False] * 5 + [True] * 40, "validation": [True] * 40})
    verdict = decide("accuracy", good, serving, counts, margin=0.01, val_tolerance=0.0)
    assert verdict.passed and verdict.paired_rows == 100 and verdict.confidence == 0.9
    assert verdict.lower_bound is not None and 0.01 <= verdict.lower_bound < verdict.gain == 0.15
    assert verdict.candidate_scores["feedback"] > verdict.serving_scores["feedback"]


def test_validation_regressions_and_missing_feedback_are_refused(datasets: Path) -> None:
    s = banking_slices(datasets)
    gold = {"feedback": [c for _, c in s.traffic[:40]], "validation": [c for _, c in s.validation]}
    serving = reports(gold, {"feedback": [False] * 40, "validation": [True] * 40})
    cand = reports(gold, {"feedback": [True] * 40, "validation": [True] * 30 + [False] * 10})
    verdict = decide("accuracy", cand, serving, {"feedback": 40, "validation": 40}, margin=0.01, val_tolerance=0.1)
    assert not verdict.passed and "validation accuracy fell 0.2500" in verdict.reason
    verdict = decide("accuracy", cand, serving, {"feedback": 0, "validation": 40}, margin=0.01, val_tolerance=0.5)
    assert not verdict.passed and verdict.reason == "no held-out feedback to judge on"


def sft(chrf: list[float], loss: float) -> EvalReport:
    return EvalReport(task="sft", rows=len(chrf), generated_rows=len(chrf), per_row=chrf,
                      metrics={"loss": loss, "chrf": sum(chrf) / len(chrf), "exact_match": 0.0, "token_f1": 0.0})


def test_answers_are_compared_by_chrf_and_the_loss_of_the_corrections_must_not_rise() -> None:
    serving = {"feedback": sft([0.2] * 12, 2.5), "validation": sft([0.5] * 8, 1.9)}
    better = {"feedback": sft([0.6] * 12, 1.4), "validation": sft([0.5] * 8, 1.9)}
    counts = {"feedback": 12, "validation": 8}
    verdict = decide("loss", better, serving, counts, margin=0.05, val_tolerance=0.0)
    assert verdict.passed and verdict.metric == "chrf", verdict.reason
    likelier_wrong = {"feedback": sft([0.6] * 12, 2.9), "validation": sft([0.5] * 8, 1.9)}
    verdict = decide("loss", likelier_wrong, serving, counts, margin=0.05, val_tolerance=0.0)
    assert not verdict.passed and "per-token loss of the held-out corrections rose" in verdict.reason
