"""The evaluation gate: a candidate against the serving version, both scored on the same fair rows: the
held-out feedback (corrections and confirmed answers never trained on) and the original validation
split. It passes only when the lower confidence bound of its paired per-row gain on those rows is at
least ``margin`` (``llmos.feedback.stats``), it does not fall on validation by more than
``val_tolerance``, and, for a chat model, its per-token loss of the held-out corrections does not rise.
A chat model is compared by chrF of its greedy answers against the corrections.

The scoring runs in an ``evaluate`` job (``llmos.feedback.evaluate_job``), under the memory budget and
co-scheduling like any job; ``decide`` turns its scores into the gate's verdict.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from llmos.config import load_settings
from llmos.data.rows import Row
from llmos.feedback.judge import JudgeVerdict
from llmos.feedback.stats import PairedGain, paired_gain
from llmos.kernel.core import Kernel
from llmos.prompt_tasks.evaluate import evaluate_prompt_task
from llmos.store.manifest import ModelInfo, is_prompt_task
from llmos.store.names import DEFAULT_TENANT
from llmos.store.registry import Registry
from llmos.train.config import Hyperparameters, resolve
from llmos.train.loading import load_trained, model_task
from llmos.train.report import EvalReport
from llmos.train.task_kinds import get_task


class GateResult(BaseModel):
    passed: bool
    reason: str
    metric: str
    candidate_scores: dict[str, float]  # split -> score
    serving_scores: dict[str, float]
    rows: dict[str, int]
    gain: float | None = None  # mean paired per-row gain over the fair splits
    lower_bound: float | None = None  # its one-sided bootstrap bound at ``confidence``
    paired_rows: int | None = None
    confidence: float | None = None
    judge: str | None = None  # the judge model, when the policy names one
    judge_preference: float | None = None  # its mean preference for the candidate's answers (0.5: none)
    judge_upper: float | None = None  # the upper confidence bound of that preference
    judge_rows: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def reports(registry: Registry, ref: str, splits: dict[str, list[Row]], kernel: Kernel | None = None,
            tenant: str | None = DEFAULT_TENANT, settings: Hyperparameters | None = None) -> tuple[str, dict[str, EvalReport]]:
    """The task's main metric and stored model ``ref``'s report (``ref`` read in ``tenant``'s namespace)
    on each non-empty split (loaded once). A prompt task is served by ``kernel`` (default: an in-process
    one, closed at the end)."""
    info = registry.get(ref, tenant=tenant)
    metric = get_task(model_task(info)).metric
    if is_prompt_task(info):  # no weights of its own: score what its serving path answers
        own = kernel is None
        kernel = kernel or Kernel(load_settings(), registry)
        try:
            return metric, {split: evaluate_prompt_task(registry, info, rows, kernel=kernel)
                            for split, rows in splits.items() if rows}
        finally:
            if own:
                kernel.close()
    loaded = load_trained(registry, info.key)
    task = get_task(loaded.task)
    cfg = resolve(settings or report_settings(info), loaded.task, "full", loaded.info.manifest.context_length)
    return metric, {split: task.report(loaded.model, loaded.tokenizer, rows, loaded.labels, cfg, loaded.chat_template)
                    for split, rows in splits.items() if rows}


REPORT_SETTINGS = ("report_rows", "max_new_tokens", "max_length", "batch_size")


def report_settings(info: ModelInfo) -> Hyperparameters:
    """The report settings a version was trained with (how many answers to generate, how long). The gate
    scores both versions with the candidate's, so their rows pair up and a small model's gate is as quick
    as its training report."""
    hp = info.manifest.lineage.hyperparameters or {}
    return Hyperparameters(**{k: hp[k] for k in REPORT_SETTINGS if hp.get(k) is not None})


def scores(registry: Registry, ref: str, splits: dict[str, list[Row]],
           tenant: str | None = DEFAULT_TENANT) -> tuple[str, dict[str, float]]:
    """The task's main metric of stored model ``ref`` on each non-empty split."""
    metric, found = reports(registry, ref, splits, tenant=tenant)
    return metric, {split: report.metric(metric) for split, report in found.items()}


GATE_METRIC = {"sft": "chrf"}  # a task whose training metric is not what the gate compares
FAIR_SPLITS = ("feedback", "validation")  # the rows both versions are scored on, paired


def gate_metric(task: str, metric: str) -> str:
    """What the gate compares for ``task`` (higher is better): the task's metric, or chrF for answers."""
    return GATE_METRIC.get(task, metric)


def decide(metric: str, cand: dict[str, EvalReport], serv: dict[str, EvalReport], counts: dict[str, int],
           margin: float, val_tolerance: float, confidence: float = 0.9, seed: int = 0,
           judged: JudgeVerdict | None = None) -> GateResult:
    """The verdict on both versions' reports of the splits ``feedback`` (held-out corrections and confirmed
    answers) and ``validation`` (the root's). The candidate passes when, over the rows of both splits,
    the lower ``confidence`` bound of its paired per-row gain is at least ``margin``; its validation
    score does not fall by more than ``val_tolerance``; and, for answers, its per-token loss of the
    held-out corrections is not above the serving version's. A judge (``judged``) vetoes a candidate
    whose answers it confidently finds worse: the upper bound of its preference below 0.5."""
    task = next(iter(cand.values())).task if cand else ""
    metric = gate_metric(task, metric)
    c_scores = {s: r.metric(metric) for s, r in cand.items() if metric in r.metrics}
    s_scores = {s: r.metric(metric) for s, r in serv.items() if metric in r.metrics}
    result = GateResult(passed=False, reason="", metric=metric, candidate_scores=c_scores, serving_scores=s_scores,
                        rows=counts, confidence=confidence)
    if not counts.get("feedback"):
        return result.model_copy(update={"reason": "no held-out feedback to judge on"})
    gain = _paired(cand, serv, metric, confidence, seed)
    drop = s_scores.get("validation", 0.0) - c_scores.get("validation", 0.0)
    result = result.model_copy(update={"gain": gain.mean, "lower_bound": gain.lower, "paired_rows": gain.n})
    if judged is not None:
        result = result.model_copy(update={"judge": judged.judge, "judge_preference": judged.preference,
                                           "judge_upper": judged.upper, "judge_rows": judged.rows})
    why = _refusal(metric, gain, margin, drop, val_tolerance, c_scores, s_scores, cand, serv)
    if not why and judged is not None and judged.prefers_serving:
        why = f"{judged.describe()}: it finds the serving version's answers better"
    if why:
        return result.model_copy(update={"reason": why})
    judge_note = f"; {judged.describe()}" if judged is not None else ""
    return result.model_copy(update={"passed": True, "reason": f"fair held-out {metric} {gain.describe()}, "
                                                               f"validation {-drop:+.4f}{judge_note}"})


def _paired(cand: dict[str, EvalReport], serv: dict[str, EvalReport], metric: str, confidence: float,
            seed: int) -> PairedGain:
    """The candidate's per-row gain over the fair splits; a split without per-row scores counts as its
    mean (one row), so an old report still gives a verdict, only with less confidence."""
    c_rows: list[float] = []
    s_rows: list[float] = []
    for split in FAIR_SPLITS:
        c, s = cand.get(split), serv.get(split)
        if c is None or s is None or metric not in c.metrics or metric not in s.metrics:
            continue
        if c.per_row is not None and s.per_row is not None and len(c.per_row) == len(s.per_row):
            c_rows += c.per_row
            s_rows += s.per_row
        else:
            c_rows.append(c.metric(metric))
            s_rows.append(s.metric(metric))
    return paired_gain(c_rows, s_rows, confidence=confidence, seed=seed)


def _refusal(metric: str, gain: PairedGain, margin: float, drop: float, val_tolerance: float,
             c_scores: dict[str, float], s_scores: dict[str, float], cand: dict[str, EvalReport],
             serv: dict[str, EvalReport]) -> str | None:
    if gain.lower < margin:
        return (f"fair held-out {metric} {gain.describe()}: the lower bound is < margin {margin} "
                f"(held-out feedback {c_scores.get('feedback', 0.0):.4f} vs {s_scores.get('feedback', 0.0):.4f})")
    if drop > val_tolerance:
        return (f"validation {metric} fell {drop:.4f} ({c_scores['validation']:.4f} vs "
                f"{s_scores['validation']:.4f}), more than the tolerance {val_tolerance}")
    c_fb, s_fb = cand.get("feedback"), serv.get("feedback")
    if c_fb is not None and s_fb is not None and "loss" in c_fb.metrics and "loss" in s_fb.metrics \
            and c_fb.metric("loss") > s_fb.metric("loss"):
        return (f"per-token loss of the held-out corrections rose: {c_fb.metric('loss'):.4f} vs "
                f"{s_fb.metric('loss'):.4f}")
    return None
