"""Hyperparameter search with Optuna: the ``tune`` job kind (``llmos tune``, ``POST /v1/tuning/jobs``).

A tuning job is a driver: it asks Optuna for a trial's hyperparameters, queues the trial as a
``train`` job (``llmos.train.trials``), watches its validations (reporting them to Optuna, which may
prune it), records how it ended, and repeats until ``trials`` have ended. Then it registers the best
trial's model as ``name:vN`` / ``name:latest`` with the study's summary (every trial's state, params,
value and job) in its lineage and as ``study.json`` beside its evaluation report.

The study lives in an Optuna journal file in the tuning job's work folder, so a tuning job paused or
stopped with the daemon resumes where it was: finished trials stay finished, a trial still running
(as its own job, resumed by the kernel) is waited for and recorded without further pruning.
The objective is the task's validation metric (accuracy, entity F1, or loss for sft) at each trial's
best checkpoint; the report of the promoted model is made on the test split when there is one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from llmos.data.registry import Datasets
from llmos.errors import LlmosError
from llmos.jobs.types import JobPaths
from llmos.train.config import Hyperparameters, TrainSpec, TrialLink
from llmos.train.job import REPORT_FILE, RunResult, job_result, publish, published_by
from llmos.train.report import EvalReport
from llmos.train.results import TuneJobResult
from llmos.train.plan import TrainEnv, TrainPlan, load_plan, plan_training
from llmos.train.plan_record import PlannedSpec, PlanRecord
from llmos.train.space import Dimension, distributions, fixed_knobs, resolve_space
from llmos.train.trials import TrialEnd, TrialJobs

if TYPE_CHECKING:
    import optuna

    from llmos.jobs.context import JobContext
    from llmos.store.manifest import ModelInfo

STUDY_FILE = "study.json"
JOURNAL_FILE = "study.journal"
MAX_FAILURES_WITHOUT_SUCCESS = 3  # a study whose first trials all fail has a problem trials will not fix


class TuningFailed(LlmosError):
    """No trial of a study produced a model (each one failed or was pruned)."""


class TuneSpec(TrainSpec):
    """A tuning job's spec: a fine-tuning spec (its hyperparameters fixed for every trial) plus the search."""

    space: dict[str, Any] = Field(default_factory=dict, description="knob -> 'low:high[:log]', 'a,b,c', list or "
                                  "{low, high, log} / {choices}; replaces the default dimension of that name")
    trials: int = Field(8, ge=1, le=500, description="trials to run (complete, pruned or failed)")
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    startup_trials: int = Field(2, ge=0, le=100, description="trials run to the end before any is pruned")
    plan: PlanRecord | None = None  # the plan of the fixed hyperparameters, made before the job was queued

    def trial_spec(self, params: dict[str, Any], link: TrialLink | None = None) -> PlannedSpec:
        """The ``train`` spec of one trial: the fixed hyperparameters with the trial's params on top, and
        the study's plan with those knobs (the trial's runner does not plan again)."""
        hp = Hyperparameters.model_validate({**fixed_knobs(self.hyperparameters), **params})
        fields = self.model_dump(include=set(TrainSpec.model_fields) - {"hyperparameters", "trial"})
        plan = self.plan.with_hyperparameters(hp) if self.plan is not None else None
        return PlannedSpec(**fields, hyperparameters=hp, trial=link, plan=plan)


@dataclass
class TunePlan:
    spec: TuneSpec  # pinned: dataset version, task and method resolved, the space made explicit
    train: TrainPlan  # the plan of the fixed hyperparameters: every check a trial would make
    space: dict[str, Dimension]
    metric: str
    direction: str  # "maximize" or "minimize"

    def summary(self) -> dict[str, Any]:
        out = self.train.summary()
        fixed = fixed_knobs(self.spec.hyperparameters)
        out.update(hyperparameters=fixed, space={k: v.describe() for k, v in self.space.items()},
                   trials=self.spec.trials, sampler=self.spec.sampler, pruner=self.spec.pruner,
                   metric=self.metric, direction=self.direction)
        return out


def plan_tuning(env: TrainEnv, spec: TuneSpec) -> TunePlan:
    """Check a tuning request as a fine-tuning one (base, dataset, task, method, name) plus its space.
    The pinned spec carries the plan, so the tuning job and its trials never plan again."""
    train = plan_training(env, spec.trial_spec({}))
    space = resolve_space(spec.space, spec.hyperparameters, train.task.name, train.method.name)
    pinned = spec.model_copy(update={
        "dataset": train.spec.dataset, "task": train.task.name, "method": train.method.name,
        "space": {k: v.model_dump(exclude_none=True) for k, v in space.items()}, "plan": train.record()})
    direction = "maximize" if train.task.greater_is_better else "minimize"
    return TunePlan(pinned, train, space, train.task.metric, direction)


def load_tuning(env: TrainEnv, spec: TuneSpec) -> TunePlan:
    """A planned tuning job's plan, read back from its spec (the dataset is not read: trials read it)."""
    if spec.plan is None:  # queued without a plan
        return plan_tuning(env, spec)
    train = load_plan(env, spec.trial_spec({}), spec.plan, rows=False)
    space = resolve_space(spec.space, spec.hyperparameters, train.task.name, train.method.name)
    direction = "maximize" if train.task.greater_is_better else "minimize"
    return TunePlan(spec, train, space, train.task.metric, direction)


def tune_job(ctx: "JobContext", spec: dict[str, Any]) -> TuneJobResult:
    """Entry point of the ``tune`` job kind (see ``llmos.jobs.kinds``)."""
    parsed = TuneSpec.parse(spec)
    store = ctx.store
    env = TrainEnv(store.registry, Datasets(store.registry.db, store.blobs, ctx.settings.locks_dir, parsed.tenant))
    done = published_by(env.registry, ctx.job_id)
    if done is not None:  # a retry after the best model was registered
        return TuneJobResult(**job_result(done).model_dump(), study=done.manifest.lineage.tuning)
    plan = load_tuning(env, parsed)
    ctx.log(f"tuning {plan.train.base.ref} on {plan.train.dataset.ref} ({plan.train.task.name.value}, "
            f"{plan.train.method.name}): {plan.spec.trials} trials, {plan.direction} validation {plan.metric}; "
            f"space {', '.join(f'{k}={v.describe()}' for k, v in plan.space.items())}")
    study = open_study(plan, ctx)
    run_trials(plan, study, TrialJobs(ctx, plan.metric), ctx)
    summary = study_summary(plan, study)
    info = promote(plan, study, summary, env, ctx)
    ctx.log(f"registered {info.ref} from trial {summary['best']['number']} ({plan.metric} "
            f"{summary['best']['value']:.4f}); {summary['counts']}")
    return TuneJobResult(**job_result(info).model_dump(), study=summary)


def open_study(plan: TunePlan, ctx: "JobContext") -> "optuna.Study":
    """The study in the job's journal file: created on the first attempt, reloaded on a resume."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(ctx.work_dir / JOURNAL_FILE)))
    spec, seed = plan.spec, plan.train.config.seed
    existing = len(optuna.load_study(study_name=ctx.job_id, storage=storage).trials) if _has_study(storage, ctx) else 0
    startup = max(spec.startup_trials, 1)
    sampler = (optuna.samplers.RandomSampler(seed=seed + existing) if spec.sampler == "random" else
               optuna.samplers.TPESampler(seed=seed + existing, n_startup_trials=startup))
    pruner = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=0),
              "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
              "none": optuna.pruners.NopPruner}[spec.pruner]()
    return optuna.create_study(storage=storage, study_name=ctx.job_id, direction=plan.direction, sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def _has_study(storage: Any, ctx: "JobContext") -> bool:
    return any(s.study_name == ctx.job_id for s in storage.get_all_studies())


def run_trials(plan: TunePlan, study: "optuna.Study", trials: TrialJobs, ctx: "JobContext") -> None:
    """Run trials one after another until ``plan.spec.trials`` have ended (or the first ones all failed)."""
    from optuna.trial import Trial, TrialState

    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # left by an earlier attempt
        job_id = frozen.user_attrs.get("job_id")
        end = trials.follow(job_id, None) if job_id else TrialEnd("fail", error="its job was never queued")
        record(study, Trial(study, frozen._trial_id), end, ctx)  # noqa: SLF001 - no public way back to a Trial
    dists = distributions(plan.space)
    _progress(study, plan, ctx)
    while len(study.trials) < plan.spec.trials:
        _give_up_if_failing(study)
        trial = study.ask(dists)
        link = TrialLink(of=ctx.job_id, number=trial.number)
        job_id = trials.submit(plan.spec.trial_spec(trial.params, link).model_dump(mode="json"))
        trial.set_user_attr("job_id", job_id)
        ctx.log(f"trial {trial.number}: job {job_id}, {_fmt(trial.params)}")
        record(study, trial, trials.follow(job_id, trial), ctx)
        _progress(study, plan, ctx)
    _give_up_if_failing(study, at_end=True)


def record(study: "optuna.Study", trial: "optuna.trial.Trial", end: TrialEnd, ctx: "JobContext") -> None:
    """Tell the study how a trial ended, and the tuning job's history (a ``trial`` event)."""
    from optuna.trial import TrialState

    state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "fail": TrialState.FAIL}[end.state]
    if end.error:
        trial.set_user_attr("error", end.error)
    study.tell(trial, end.value if end.state == "complete" else None, state=state, skip_if_finished=True)
    job = end.job.id if end.job else None
    ctx.event("trial", number=trial.number, job_id=job, state=end.state, value=end.value, params=trial.params,
              error=end.error)
    ctx.log(f"trial {trial.number}: {end.state}" + (f", value {end.value:.4f}" if end.value is not None else "")
            + (f" ({end.error})" if end.error else ""))


def _give_up_if_failing(study: "optuna.Study", at_end: bool = False) -> None:
    from optuna.trial import TrialState

    states = [t.state for t in study.trials]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    if TrialState.COMPLETE in states or (not at_end and len(failed) < MAX_FAILURES_WITHOUT_SUCCESS):
        return
    first = failed[0].user_attrs.get("error") if failed else None
    pruned = states.count(TrialState.PRUNED)
    raise TuningFailed(f"no trial completed ({len(failed)} failed, {pruned} pruned)"
                       + (f"; first failure: {first}" if first else ""))


def _progress(study: "optuna.Study", plan: TunePlan, ctx: "JobContext") -> None:
    summary = study_summary(plan, study)
    metrics = {k: float(v) for k, v in summary["counts"].items()}
    if summary["best"]:
        metrics[f"best_{plan.metric}"] = summary["best"]["value"]
    ctx.progress(len(study.trials), plan.spec.trials, **metrics)


def study_summary(plan: TunePlan, study: "optuna.Study") -> dict[str, Any]:
    """What lineage and ``study.json`` keep: the search, every trial and the best one."""
    from optuna.trial import TrialState

    rows = [{"number": t.number, "state": t.state.name.lower(), "params": t.params, "value": t.value,
             "job_id": t.user_attrs.get("job_id"), "intermediate": {str(k): v for k, v in t.intermediate_values.items()},
             "error": t.user_attrs.get("error")} for t in study.trials]
    counts = {name: sum(1 for t in study.trials if t.state == state) for name, state in
              (("complete", TrialState.COMPLETE), ("pruned", TrialState.PRUNED), ("failed", TrialState.FAIL))}
    complete = [r for r in rows if r["state"] == "complete"]
    best = None
    if complete:
        pick = max if plan.direction == "maximize" else min
        best = pick(complete, key=lambda r: r["value"])
    return {"metric": plan.metric, "direction": plan.direction, "sampler": plan.spec.sampler,
            "pruner": plan.spec.pruner, "space": {k: v.describe() for k, v in plan.space.items()},
            "fixed": fixed_knobs(plan.spec.hyperparameters), "counts": counts,
            "best": best and {k: best[k] for k in ("number", "params", "value", "job_id")}, "trials": rows}


def promote(plan: TunePlan, study: "optuna.Study", summary: dict[str, Any], env: TrainEnv,
            ctx: "JobContext") -> "ModelInfo":
    """Register the best trial's model (its folder, kept by its job) with the study in its lineage."""
    best = summary["best"]
    if best is None:
        raise TuningFailed(f"no trial completed: {summary['counts']}")
    folder = JobPaths.of(ctx.settings.jobs_dir, best["job_id"]).work / "result"
    if not (folder / REPORT_FILE).is_file():
        raise TuningFailed(f"the best trial's result ({folder}) is gone; run the study again")
    best_spec = plan.spec.trial_spec(best["params"])
    train = (load_plan(env, best_spec, best_spec.plan, rows=False) if best_spec.plan is not None
             else plan_training(env, best_spec))
    report = EvalReport.read(folder / REPORT_FILE)
    (folder / STUDY_FILE).write_text(json.dumps(summary, indent=2, default=float))
    result = RunResult(folder, train.method.result_kind(train.task), report, None)
    extra = {"tuning": {**{k: v for k, v in summary.items() if k != "trials"}, "file": STUDY_FILE,
                        "trials": [{k: r[k] for k in ("number", "state", "params", "value", "job_id")}
                                   for r in summary["trials"]]}}
    info = publish(ctx.store.importer, env.registry, train, result, ctx.job_id, extra)
    trials = TrialJobs(ctx, plan.metric)
    for row in summary["trials"]:
        if row["job_id"]:
            trials.discard(row["job_id"])
    return info


def _fmt(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
