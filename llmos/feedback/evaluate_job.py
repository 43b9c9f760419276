"""The ``evaluate`` job kind: stored models scored on a dataset's splits, in a runner process.

``llmos eval MODEL DATASET`` with a daemon up (``POST /v1/evaluations``) is one: one model, one split.
The feedback loop's gate is another: the candidate and the serving version on the round's validation rows
and its held-out feedback (dataset split ``test``), with the verdict (``GateResult``) in the job's
result. Running as a job puts the evaluation where all heavy work goes: admitted under the memory
budget (the spec's ``base`` is the largest model it loads), frozen or paused for interactive traffic by
the co-scheduler, at the runner's low CPU priority, visible in ``llmos jobs`` with its log.

A model is loaded once and scored on every split; a prompt task is scored through its serving path
(an in-process kernel in the runner). A pause that frees memory restarts the evaluation from the
first model: there is nothing worth checkpointing between two models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmos.data.registry import Datasets
from llmos.data.rows import Row
from llmos.errors import InvalidInput
from llmos.feedback.gate import FAIR_SPLITS, GateResult, decide, report_settings, reports
from llmos.feedback.judge import judge_gate
from llmos.kernel.core import Kernel
from llmos.store.manifest import ModelInfo, is_prompt_task
from llmos.store.registry import Registry
from llmos.train.loading import eval_target
from llmos.train.report import EvalReport

if TYPE_CHECKING:
    from llmos.jobs.context import JobContext

KIND = "evaluate"
GATE_SPLITS = {"validation": "validation", "feedback": "test"}  # the gate's names -> the round dataset's splits


class GateRule(BaseModel):
    """Judge ``models[0]`` (the candidate) against ``models[1]`` (the serving version)."""

    model_config = ConfigDict(extra="forbid")

    margin: float = Field(ge=0, le=1)
    val_tolerance: float = Field(ge=0, le=1)
    confidence: float = Field(0.9, ge=0.5, lt=1, description="of the paired gain's lower bound")
    seed: int = Field(0, ge=0, description="seeds the bootstrap")
    judge: str | None = Field(None, description="a stored chat model that compares both versions' answers")


class EvaluateSpec(BaseModel):
    """An ``evaluate`` job's spec, as stored with the job."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(min_length=1, max_length=8, description="stored models to score (name:tag)")
    dataset: str = Field(min_length=1, description="dataset version: name@version")
    splits: dict[str, str | None] = Field(default_factory=lambda: dict(GATE_SPLITS), min_length=1,
                                          description="result name -> dataset split scored under that name "
                                                      "(null: every row)")
    max_rows: int | None = Field(None, ge=1, description="score at most this many rows of each split")
    gate: GateRule | None = None
    base: str | None = Field(None, description="the largest model loaded: what memory admission reserves")
    tenant: str = "default"

    @classmethod
    def parse(cls, data: dict[str, Any]) -> "EvaluateSpec":
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "spec"
            raise InvalidInput(f"{where}: {first['msg']}", param=where) from None


class EvaluateResult(BaseModel):
    """What an ``evaluate`` job stores: each model's report per split, the main metric, the verdict."""

    metric: str
    rows: dict[str, int]  # split -> rows scored
    scores: dict[str, dict[str, float]]  # model -> split -> the main metric
    reports: dict[str, dict[str, EvalReport]]  # model -> split -> report
    gate: GateResult | None = None


def gate_spec(registry: Registry, candidate: str, serving: str, dataset: str, rule: GateRule,
              tenant: str) -> EvaluateSpec:
    """The spec of a gate: candidate against the serving version on the round dataset's splits (the
    judge, when there is one, counts among the models memory admission sizes the job by)."""
    models = [candidate, serving]
    loaded = models + ([rule.judge] if rule.judge else [])
    return EvaluateSpec(models=models, dataset=dataset, gate=rule,
                        base=largest_weights(registry, loaded, tenant).ref, tenant=tenant)


def eval_spec(registry: Registry, datasets: Datasets, model: str, dataset: str, split: str | None,
              max_rows: int | None, tenant: str) -> EvaluateSpec:
    """The spec of ``llmos eval MODEL DATASET [--split S]``, checked as the in-process command checks it."""
    info, ds, split = eval_target(registry, datasets, model, dataset, split)
    return EvaluateSpec(models=[info.ref], dataset=ds.ref, splits={split or "all": split}, max_rows=max_rows,
                        base=largest_weights(registry, [info.ref], tenant).ref, tenant=tenant)


def largest_weights(registry: Registry, refs: list[str], tenant: str) -> ModelInfo:
    """Of the weights that answer for ``refs`` (read in ``tenant``'s namespace; a prompt task's or an
    adapter's base), the largest."""
    return max((_weights(registry, registry.get(ref, tenant=tenant)) for ref in refs),
               key=lambda i: i.manifest.size_bytes)


def _weights(registry: Registry, info: ModelInfo) -> ModelInfo:
    if is_prompt_task(info) or (info.manifest.kind == "adapter" and info.manifest.parent):
        return registry.parent(info)
    return info


def evaluate_job(ctx: "JobContext", spec: dict[str, Any]) -> EvaluateResult:
    """Entry point of the ``evaluate`` job kind (see ``llmos.jobs.kinds``)."""
    parsed = EvaluateSpec.parse(spec)
    store = ctx.store
    datasets = Datasets(store.registry.db, store.blobs, ctx.settings.locks_dir, parsed.tenant)
    splits = split_rows(datasets, parsed)
    counts = {name: len(rows) for name, rows in splits.items()}
    ctx.log(f"evaluating {', '.join(parsed.models)} on {parsed.dataset}: "
            + ", ".join(f"{name} {n} rows" for name, n in counts.items()))
    metric, found = "", {}
    settings = report_settings(store.registry.get(parsed.models[0], tenant=parsed.tenant))  # one for every model
    kernel = Kernel(ctx.settings, store.registry)  # serves prompt tasks; loads nothing until one is scored
    try:
        for i, ref in enumerate(parsed.models):
            ctx.progress(i, len(parsed.models))
            ctx.pause_point()
            metric, found[ref] = reports(store.registry, ref, splits, kernel, tenant=parsed.tenant, settings=settings)
            found[ref] = {s: r.model_copy(update={"model": ref, "dataset": parsed.dataset,
                                                  "split": parsed.splits[s] or "all"}) for s, r in found[ref].items()}
            ctx.log(f"{ref}: " + ", ".join(f"{s} {metric} {r.metric(metric):.4f}" for s, r in found[ref].items()))
    finally:
        kernel.close()
    ctx.progress(len(parsed.models), len(parsed.models))
    scores = {ref: {s: r.metric(metric) for s, r in by_split.items()} for ref, by_split in found.items()}
    result = EvaluateResult(metric=metric, rows=counts, scores=scores, reports=found)
    if parsed.gate is not None and len(parsed.models) >= 2:
        cand, serv = parsed.models[:2]
        rule = parsed.gate
        judged = None
        if rule.judge is not None and any(r.answers is not None for r in found[cand].values()):
            ctx.log(f"judge {rule.judge} compares the two versions' answers")
            ctx.pause_point()
            judged = judge_gate(store.registry, rule.judge, parsed.tenant, splits, found[cand], found[serv],
                                FAIR_SPLITS, rule.confidence, rule.seed)
            ctx.log(judged.describe())
        result.gate = decide(metric, found[cand], found[serv], counts, rule.margin, rule.val_tolerance,
                             rule.confidence, rule.seed, judged)
        ctx.log(f"gate {'passed' if result.gate.passed else 'rejected'}: {result.gate.reason}")
    return result


def split_rows(datasets: Datasets, spec: EvaluateSpec) -> dict[str, list[Row]]:
    """The rows of each named split (the first ``max_rows``), read in one pass over the dataset version."""
    info = datasets.get(spec.dataset)
    out: dict[str, list[Row]] = {name: [] for name in spec.splits}
    for row in datasets.rows(info.name, info.version):
        for name, split in spec.splits.items():
            if split is None or row.split == split:
                out[name].append(row)
    return {name: rows[:spec.max_rows] if spec.max_rows else rows for name, rows in out.items()}
