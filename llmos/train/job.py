"""The ``train`` job kind: plan -> train (the one loop) -> evaluate -> save -> register with lineage.

``train_job(ctx, spec)`` runs in the job's runner process, on the plan its spec carries (made when the
job was queued; see ``llmos.train.plan``). ``run_plan`` is the same work for any
caller with a ``Reporter`` (a test or a notebook can run it in-process); ``publish`` registers the
result folder as a new model version (``name:vN``, with ``name:latest`` pointing at it).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.data.registry import Datasets
from llmos.errors import Conflict
from llmos.store.importer import ImportOptions
from llmos.store.manifest import Lineage, LineageBase, LineageDataset, ModelInfo
from llmos.train.plan import TrainEnv, TrainPlan, load_plan, plan_training
from llmos.train.plan_record import PlannedSpec
from llmos.train.report import EvalReport, TrainingSummary
from llmos.train.results import TrainJobResult, TrialResult

if TYPE_CHECKING:
    from llmos.jobs.context import JobContext
    from llmos.store.importer import Importer
    from llmos.train.runner import Reporter, TrainOutcome

REPORT_FILE = "eval_report.json"
CURVE_FILE = "loss_curve.png"
TEMPLATE_FILE = "chat_template.jinja"


@dataclass
class RunResult:
    folder: Path  # what the store receives: weights (or adapter), tokenizer / template, report, curve
    kind: str  # "model" or "adapter"
    report: EvalReport
    outcome: "TrainOutcome | None"  # None: a result promoted later from a finished trial's folder


def train_job(ctx: "JobContext", spec: dict[str, Any]) -> TrainJobResult | TrialResult:
    """Entry point of the ``train`` job kind (see ``llmos.jobs.kinds``)."""
    _quiet_transformers()
    parsed = PlannedSpec.parse(spec)
    store = ctx.store
    env = TrainEnv(store.registry, Datasets(store.registry.db, store.blobs, ctx.settings.locks_dir, parsed.tenant))
    done = published_by(env.registry, ctx.job_id)
    if done is not None:  # a retry after the result was registered: nothing left to do
        return job_result(done)
    # Planned before it was queued: read the plan back (a job queued without one is planned here).
    plan = load_plan(env, parsed, parsed.plan) if parsed.plan is not None else plan_training(env, parsed)
    ctx.log(f"training {plan.base.ref} on {plan.dataset.ref}: task {plan.task.name.value}, method "
            f"{plan.method.name}, {len(plan.splits.train)} training rows, {len(plan.splits.validation)} validation")
    for warning in plan.splits.warnings:
        ctx.log(f"note: {warning}")
    result = run_plan(plan, env, ctx, ctx.work_dir)
    if parsed.trial is not None:  # a tuning job compares the trials and registers the best one
        return trial_result(plan, result)
    info = publish(store.importer, env.registry, plan, result, ctx.job_id)
    shutil.rmtree(result.folder, ignore_errors=True)
    ctx.log(f"registered {info.ref} ({info.manifest.kind}); metrics {result.report.metrics}")
    return job_result(info)


def run_plan(plan: TrainPlan, env: TrainEnv, reporter: "Reporter", work_dir: Path) -> RunResult:
    """Train, evaluate and write the result folder under ``work_dir``."""
    from transformers import AutoTokenizer

    from llmos.train.evaluate import loss_curve
    from llmos.train.runner import TrainInputs, train

    task, method, cfg = plan.task, plan.method, plan.config
    base_dir = env.registry.snapshot(plan.base)
    template = plan.base.manifest.chat_template
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    loaded = task.load_model(base_dir, plan.labels, tokenizer)
    model = (method.continue_adapter(loaded, env.registry.snapshot(plan.start)) if plan.start is not None
             else method.wrap(loaded, task, cfg))
    inputs = TrainInputs(
        model=model, config=cfg, collator=task.collator(tokenizer), metric=task.metric,
        train=task.encode(plan.splits.train, tokenizer, plan.labels, cfg, template),
        validation=task.encode(plan.splits.validation, tokenizer, plan.labels, cfg, template),
        greater_is_better=task.greater_is_better, compute_metrics=task.compute_metrics(plan.labels))
    inputs = method.inputs(inputs, plan.splits.train, tokenizer, template)
    outcome = train(inputs, reporter)
    reporter.log(f"trained {outcome.global_step} steps; evaluating on the {plan.splits.report_split} split")
    report = task.report(outcome.model, tokenizer, plan.splits.report, plan.labels, cfg, template)
    report = report.model_copy(update={"split": plan.splits.report_split, "training": _training_summary(outcome)})
    folder = work_dir / "result"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    method.save(outcome.model, task, folder)
    (folder / "README.md").unlink(missing_ok=True)  # PEFT's generic model card; the report says more
    kind = method.result_kind(task)
    _save_tokenizer(tokenizer, template, folder, kind, task.head)
    report.write(folder / REPORT_FILE)
    loss_curve(outcome.log_history, folder / CURVE_FILE, f"{plan.base.name} on {plan.dataset.ref} ({method.name})")
    return RunResult(folder, kind, report, outcome)


def trial_result(plan: TrainPlan, result: RunResult) -> TrialResult:
    """A trial's job result: its validation score (the best checkpoint's) and where its model lies."""
    metric = plan.task.metric
    best = result.outcome.best_metric if result.outcome is not None else None
    value = best if best is not None else result.report.metrics.get(metric)
    training = result.report.training.without_history() if result.report.training else {}
    return TrialResult(trial=plan.spec.trial.number if plan.spec.trial else None, metric=metric, value=value,
                       metrics=result.report.metrics, result_dir=str(result.folder), training=training)


def _save_tokenizer(tokenizer: Any, template: str | None, folder: Path, kind: str, head: str) -> None:
    """The tokenizer and the chat template the model was trained with travel with it."""
    if template:
        tokenizer.chat_template = template
    if kind == "model" or head != "causal":
        tokenizer.save_pretrained(folder)  # an adapter with its own engine loads its tokenizer from here too
    if template:
        (folder / TEMPLATE_FILE).write_text(template, encoding="utf-8")


def _training_summary(outcome: "TrainOutcome") -> TrainingSummary:
    history = [(e["step"], e["loss"]) for e in outcome.log_history if "loss" in e and "step" in e]
    losses = [loss for _, loss in history]
    return TrainingSummary(steps=outcome.global_step, max_steps=outcome.max_steps, best_step=outcome.best_step,
                           best_metric=outcome.best_metric, stopped_early=outcome.stopped_early,
                           first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None,
                           runtime_s=outcome.metrics.get("train_runtime"),
                           samples_per_second=outcome.metrics.get("train_samples_per_second"), loss_history=history)


# -- registering the result -----------------------------------------------------------------------
def lineage(plan: TrainPlan, report: EvalReport, job_id: str | None) -> Lineage:
    ds = plan.dataset
    training = report.training.without_history() if report.training else {}  # the history is in the report
    return Lineage(base=LineageBase(ref=plan.base.ref, digest=plan.base.digest),
                   dataset=LineageDataset(name=ds.name, version=ds.version, digest=ds.digest, task=ds.task.value),
                   task=plan.task.name.value, method=plan.method.name, peft_type=plan.method.peft_type,
                   hyperparameters=plan.config.to_dict(), metrics=report.metrics, eval_split=report.split,
                   eval_rows=report.rows,
                   training=training, job_id=job_id, files={"report": REPORT_FILE, "loss_curve": CURVE_FILE},
                   **({"started_from": LineageBase(ref=plan.start.ref, digest=plan.start.digest)} if plan.start else {}))


def publish(importer: "Importer", registry: Any, plan: TrainPlan, result: RunResult,
            job_id: str | None, extra_lineage: dict[str, Any] | None = None) -> ModelInfo:
    """Register the result folder; a name without a tag becomes ``name:vN`` and ``name:latest``.
    ``extra_lineage`` adds entries to the lineage (a tuning job's study summary)."""
    overrides: dict[str, Any] = {}
    if result.kind == "adapter" and plan.task.head != "causal":
        # A prompt-learning adapter over an encoder serves its task alone, with its own labels.
        overrides = {"tasks": [plan.task.name.value], "labels": plan.labels}
    record = lineage(plan, result.report, job_id).with_(**(extra_lineage or {}))
    opts = ImportOptions(parent=plan.base.ref, lineage=record, tenant=plan.owner,  # private to its tenant
                         license=plan.base.manifest.license, source=f"job:{job_id}" if job_id else "train",
                         overrides=overrides)
    explicit = ":" in plan.output
    for _ in range(5):
        ref = plan.output if explicit else registry.next_version(plan.output, plan.owner)
        try:
            info = importer.import_path(result.folder, ref, opts)
            break
        except Conflict:
            if explicit:
                raise
    else:
        raise Conflict(f"could not find a free version of {plan.output}; try again")
    if not explicit:
        registry.tag_key(info.key, f"{info.name}:latest", replace=True)
    return info


def published_by(registry: Any, job_id: str) -> ModelInfo | None:
    found = [i for i in registry.list() if i.manifest.lineage.job_id == job_id and i.tag != "latest"]
    return found[0] if found else None


def job_result(info: ModelInfo) -> TrainJobResult:
    lin = info.manifest.lineage
    return TrainJobResult(model=info.ref, kind=info.manifest.kind, task=lin.task, method=lin.method,
                          metrics=lin.metrics or {}, eval_split=lin.eval_split, training=lin.training or {})


def _quiet_transformers() -> None:
    import warnings

    from transformers.utils import logging as hf_logging

    # PEFT asks transformers a deprecated question while wrapping a model: nothing for a user to fix.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
