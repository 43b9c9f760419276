"""The evaluation gate: a candidate against the serving version on the original validation split and
on the held-out feedback. It passes only when it beats the serving version on held-out feedback by
``margin`` and does not fall on validation by more than ``val_tolerance``.

The scoring runs in an ``evaluate`` job (``llmos.feedback.evaluate_job``), under the memory budget and
co-scheduling like any job; ``decide`` turns its scores into the gate's verdict.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from llmos.config import load_settings
from llmos.data.rows import Row
from llmos.kernel.core import Kernel
from llmos.prompt_tasks.evaluate import evaluate_prompt_task
from llmos.store.manifest import is_prompt_task
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

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def reports(registry: Registry, ref: str, splits: dict[str, list[Row]], kernel: Kernel | None = None,
            tenant: str | None = DEFAULT_TENANT) -> tuple[str, dict[str, EvalReport]]:
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
    cfg = resolve(Hyperparameters(), loaded.task, "full", loaded.info.manifest.context_length)
    return metric, {split: task.report(loaded.model, loaded.tokenizer, rows, loaded.labels, cfg, loaded.chat_template)
                    for split, rows in splits.items() if rows}


def scores(registry: Registry, ref: str, splits: dict[str, list[Row]],
           tenant: str | None = DEFAULT_TENANT) -> tuple[str, dict[str, float]]:
    """The task's main metric of stored model ``ref`` on each non-empty split."""
    metric, found = reports(registry, ref, splits, tenant=tenant)
    return metric, {split: report.metric(metric) for split, report in found.items()}


def decide(metric: str, cand: dict[str, float], serv: dict[str, float], counts: dict[str, int], margin: float,
           val_tolerance: float) -> GateResult:
    """The verdict on the candidate's and the serving version's scores (splits ``validation``, ``feedback``)."""
    if not counts.get("feedback"):
        return GateResult(passed=False, reason="no held-out feedback to judge on", metric=metric,
                          candidate_scores=cand, serving_scores=serv, rows=counts)
    gain = cand["feedback"] - serv["feedback"]
    drop = serv.get("validation", 0.0) - cand.get("validation", 0.0)
    passed, reason = True, f"held-out feedback {metric} {gain:+.4f}, validation {-drop:+.4f}"
    if gain < margin:
        passed, reason = False, (f"held-out feedback {metric} {cand['feedback']:.4f} vs {serv['feedback']:.4f}: "
                                 f"gain {gain:+.4f} < margin {margin}")
    elif drop > val_tolerance:
        passed, reason = False, (f"validation {metric} fell {drop:.4f} ({cand['validation']:.4f} vs "
                                 f"{serv['validation']:.4f}), more than the tolerance {val_tolerance}")
    return GateResult(passed=passed, reason=reason, metric=metric, candidate_scores=cand, serving_scores=serv,
                      rows=counts)
