"""The evaluation gate: a candidate against the serving version on the original validation split and
on the held-out feedback. It passes only when it beats the serving version on held-out feedback by
``margin`` and does not fall on validation by more than ``val_tolerance``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from llmos.data.registry import Datasets
from llmos.data.rows import Row
from llmos.store.manifest import ModelInfo
from llmos.store.registry import Registry
from llmos.train.config import Hyperparameters, resolve
from llmos.prompt_tasks import is_prompt_task
from llmos.train.loading import load_trained, model_task
from llmos.train.tasks import get_task


@dataclass
class GateResult:
    passed: bool
    reason: str
    metric: str
    candidate_scores: dict[str, float]  # split -> score
    serving_scores: dict[str, float]
    rows: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scores(registry: Registry, ref: str, splits: dict[str, list[Row]],
           tenant: str | None) -> tuple[str, dict[str, float]]:
    """The task's main metric of stored model ``ref`` (in ``tenant``'s namespace) on each non-empty
    split (loaded once)."""
    info = registry.get(ref, tenant=tenant)
    if is_prompt_task(info):  # no weights of its own: score what its serving path answers
        return _prompt_task_scores(registry, info, splits)
    loaded = load_trained(registry, info.key)
    task = get_task(loaded.task)
    cfg = resolve(Hyperparameters(), loaded.task, "full", loaded.info.manifest.context_length)
    out = {}
    for split, rows in splits.items():
        if rows:
            report = task.report(loaded.model, loaded.tokenizer, rows, loaded.labels, cfg, loaded.chat_template)
            out[split] = float(report["metrics"][task.metric])
    return task.metric, out


def _prompt_task_scores(registry: Registry, info: ModelInfo,
                        splits: dict[str, list[Row]]) -> tuple[str, dict[str, float]]:
    from llmos.prompt_tasks.evaluate import evaluate_prompt_task

    metric = get_task(model_task(info)).metric
    return metric, {split: float(evaluate_prompt_task(registry, info, rows)["metrics"][metric])
                    for split, rows in splits.items() if rows}


def run_gate(registry: Registry, datasets: Datasets, dataset_ref: str, candidate: str, serving: str,
             margin: float, val_tolerance: float) -> GateResult:
    info = datasets.get(dataset_ref)
    rows = list(datasets.rows(info.name, info.version))
    splits = {"validation": [r for r in rows if r.split == "validation"],
              "feedback": [r for r in rows if r.split == "test"]}
    metric, cand = scores(registry, candidate, splits, datasets.tenant)
    _, serv = scores(registry, serving, splits, datasets.tenant)
    counts = {k: len(v) for k, v in splits.items()}
    if not counts["feedback"]:
        return GateResult(False, "no held-out feedback to judge on", metric, cand, serv, counts)
    gain = cand["feedback"] - serv["feedback"]
    drop = serv.get("validation", 0.0) - cand.get("validation", 0.0)
    if gain < margin:
        reason = (f"held-out feedback {metric} {cand['feedback']:.4f} vs {serv['feedback']:.4f}: "
                  f"gain {gain:+.4f} < margin {margin}")
        return GateResult(False, reason, metric, cand, serv, counts)
    if drop > val_tolerance:
        reason = (f"validation {metric} fell {drop:.4f} ({cand['validation']:.4f} vs {serv['validation']:.4f}), "
                  f"more than the tolerance {val_tolerance}")
        return GateResult(False, reason, metric, cand, serv, counts)
    return GateResult(True, f"held-out feedback {metric} {gain:+.4f}, validation {-drop:+.4f}", metric, cand, serv,
                      counts)
