"""Checking a fine-tuning request before anything runs, and the splits it trains and reports on.

``plan_training`` is called by the API (and the CLI through it) before a job is queued: every mistake
a user can make is a clear error here, with nothing registered and no job left behind. It resolves
the base model, the dataset version (pinned: a later import does not change what a queued job trains
on), the task, the method, the concrete hyperparameters and the rows of each split. The plan travels
with the job as data (``TrainPlan.job_spec()``, a ``PlanRecord``); the runner reads it back with
``load_plan`` (digests re-checked, the rows read once) instead of planning again.

Splits: ``train`` rows train (all rows when the dataset is not split); ``validation`` rows pick the best
checkpoint and drive early stopping, and when the dataset has none they are held out of the training
rows (stratified by label, seeded); the report is made on ``test`` when there is one, else on the
validation rows.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmos.data.info import DatasetInfo
from llmos.data.registry import Datasets
from llmos.data.rows import Row, Task
from llmos.data.split import SplitOptions, split_rows
from llmos.errors import Conflict, InvalidInput
from llmos.store.manifest import ModelInfo
from llmos.store.names import key_of, parse_ref
from llmos.store.registry import Registry
from llmos.train.config import TrainConfig, TrainSpec, fit_to_data, resolve
from llmos.train.methods import DEFAULT_METHOD, Method, get_method
from llmos.train.plan_record import PlanRecord, PlannedDataset, PlannedModel, PlannedSpec, PlannedSplits, RowPick
from llmos.train.task_kinds import TrainTask, get_task

if TYPE_CHECKING:
    from llmos.runtime import Runtime

MIN_ROWS_TO_SPLIT = 10  # fewer rows cannot give both a training set and a validation set worth the name


@dataclass
class TrainEnv:
    """What planning and training read and write: the model registry and one tenant's datasets."""

    registry: Registry
    datasets: Datasets

    @classmethod
    def of(cls, runtime: "Runtime", tenant: str = "default") -> "TrainEnv":
        return cls(runtime.store.registry, Datasets.of(runtime, tenant))


@dataclass
class Splits:
    train: list[Row]
    validation: list[Row]
    report: list[Row]
    picks: PlannedSplits  # which rows of which dataset split each one is (what the job's spec keeps)

    @property
    def report_split(self) -> str:  # "test" or "validation"
        return self.picks.report_split

    @property
    def held_out(self) -> bool:  # validation rows were carved out of the training rows
        return self.picks.held_out

    @property
    def warnings(self) -> list[str]:
        return self.picks.warnings


@dataclass
class TrainPlan:
    spec: TrainSpec
    base: ModelInfo
    dataset: DatasetInfo
    task: TrainTask
    method: Method
    config: TrainConfig
    output: str  # name, or name:tag when the user gave one
    owner: str | None  # whose namespace the result goes to (None: public)
    labels: list[str]
    splits: Splits
    start: ModelInfo | None = None  # a LoRA adapter over ``base`` the new adapter starts from

    def record(self) -> PlanRecord:
        """The plan as data, for the job's spec."""
        base = PlannedModel(ref=self.base.ref, digest=self.base.digest,
                            context_length=self.base.manifest.context_length)
        return PlanRecord(base=base, dataset=PlannedDataset(ref=self.dataset.ref, digest=self.dataset.digest),
                          task=self.task.name, method=self.method.name, config=self.config, output=self.output,
                          labels=self.labels, splits=self.splits.picks,
                          start_from=PlannedModel(ref=self.start.ref, digest=self.start.digest) if self.start else None)

    def job_spec(self) -> dict[str, Any]:
        """The ``train`` job's spec: the pinned request and the plan the runner reads back."""
        return PlannedSpec(**dict(self.spec), plan=self.record()).model_dump(mode="json")

    def summary(self) -> dict[str, Any]:
        """What the API returns about a queued job's plan (and the job stores)."""
        return {"base": self.base.ref, "dataset": self.dataset.ref, "task": self.task.name.value,
                "method": self.method.name, "output": self.output, "labels": self.labels,
                "rows": {"train": self.splits.picks.train.rows, "validation": self.splits.picks.validation.rows,
                         self.splits.report_split: self.splits.picks.report.rows},
                "hyperparameters": self.config.to_dict(), "warnings": self.splits.warnings}


def plan_training(env: TrainEnv, spec: TrainSpec) -> TrainPlan:
    """Resolve and check everything a job needs; InvalidInput / NotFound / WrongTask / Conflict otherwise."""
    base = _base(env.registry, spec.base, env.datasets.tenant)
    dataset = env.datasets.get(spec.dataset)
    task = get_task(_task(spec, dataset))
    task.check_base(base)
    method = get_method(spec.method or DEFAULT_METHOD[task.name])
    method.check(task, base)
    start = _start(env.registry, spec, base, method) if spec.start_from else None
    output, owner = _output(env.registry, spec, base, dataset)
    config = resolve(spec.hyperparameters, task.name, method.name, base.manifest.context_length)
    rows = list(env.datasets.rows(dataset.name, dataset.version))
    splits = make_splits(rows, dataset, config)
    config = fit_to_data(config, spec.hyperparameters, task.name, len(splits.train))
    labels = task.label_set(splits.train)
    task.check_rows(splits.train, labels, f"dataset {dataset.ref}")
    method.check_rows(splits.train, f"dataset {dataset.ref}")
    pinned = spec.model_copy(update={"dataset": dataset.ref, "task": task.name, "method": method.name})
    return TrainPlan(pinned, base, dataset, task, method, config, output, owner, labels, splits, start)


def load_plan(env: TrainEnv, spec: TrainSpec, record: PlanRecord, *, rows: bool = True) -> TrainPlan:
    """The plan a job was queued with, resolved again without planning: the base model and the dataset
    version must still be the ones planned (same digests); the rows are read once and picked as planned.
    Without ``rows`` the dataset is not read (a tuning job needs the plan, not the rows)."""
    base = env.registry.get(record.base.ref, tenant=env.datasets.tenant)
    if base.digest != record.base.digest:
        raise Conflict(f"model {record.base.ref} changed since the job was planned ({record.base.digest[:19]} -> "
                       f"{base.digest[:19]}); submit the job again", param="model")
    dataset = env.datasets.get(record.dataset.ref)
    if dataset.digest != record.dataset.digest:
        raise Conflict(f"dataset {record.dataset.ref} is not the version the job was planned on", param="dataset")
    found = list(env.datasets.rows(dataset.name, dataset.version)) if rows else []
    splits = select_splits(found, record.splits, dataset.ref) if rows else Splits([], [], [], record.splits)
    owner = env.registry.check_write(parse_ref(record.output).name, spec.tenant, admin=spec.publish)
    start = _pinned(env, record.start_from) if record.start_from is not None else None
    return TrainPlan(spec, base, dataset, get_task(record.task), get_method(record.method), record.config,
                     record.output, owner, list(record.labels), splits, start)


def _pinned(env: TrainEnv, planned: PlannedModel) -> ModelInfo:
    info = env.registry.get(planned.ref, tenant=env.datasets.tenant)
    if info.digest != planned.digest:
        raise Conflict(f"model {planned.ref} changed since the job was planned ({planned.digest[:19]} -> "
                       f"{info.digest[:19]}); submit the job again", param="start_from")
    return info


def _start(registry: Registry, spec: TrainSpec, base: ModelInfo, method: Method) -> ModelInfo:
    """The adapter a LoRA run starts from: a LoRA adapter (in the caller's tenant) over exactly ``base``."""
    assert spec.start_from is not None
    start = registry.get(spec.start_from, tenant=spec.tenant)
    if method.peft_type != "LORA":
        raise InvalidInput(f"start_from continues a LoRA adapter; method {method.name} trains no LoRA adapter "
                           "(use lora or dpo)", param="start_from")
    lin = start.manifest.lineage
    if start.manifest.kind != "adapter" or (lin.peft_type or "LORA") != "LORA":
        raise InvalidInput(f"start_from must name a LoRA adapter; {start.ref} is a {start.manifest.kind}",
                           param="start_from")
    over = lin.base.digest if lin.base is not None and lin.base.digest else (start.manifest.parent or "").rpartition("@")[2]
    if over != base.digest:
        raise InvalidInput(f"adapter {start.ref} was trained over {start.manifest.parent or 'another model'}, not "
                           f"{base.ref}; start it over its own base", param="start_from")
    return start


def _base(registry: Registry, ref: str, tenant: str) -> ModelInfo:
    base = registry.get(ref, tenant=tenant)  # another tenant's private model is not found
    if base.manifest.kind == "adapter":
        raise InvalidInput(f"model {base.ref} is an adapter over {base.manifest.parent}; fine-tune its base, or "
                           f"export it merged (llmos models export) and import that", param="model")
    return base


def _task(spec: TrainSpec, dataset: DatasetInfo) -> Task:
    if spec.task is not None and spec.task != dataset.task:
        raise InvalidInput(f"dataset {dataset.ref} holds {dataset.task.value} rows; it cannot train task "
                           f"{spec.task.value!r} (leave task out to use the dataset's)", param="task")
    return dataset.task


def _output(registry: Registry, spec: TrainSpec, base: ModelInfo, dataset: DatasetInfo) -> tuple[str, str | None]:
    """The result's name and namespace. With a tag, that tag must be free (a version is never
    overwritten); without one, results become ``name:v1``, ``name:v2``... and ``name:latest``, so the
    name must be new or already hold such versions: training never re-points another model's ``latest``.
    A public name takes results from an admin alone (403 otherwise)."""
    name = spec.name or f"{base.name}-{dataset.name}"
    ref = parse_ref(name)
    owner = registry.check_write(ref.name, spec.tenant, admin=spec.publish)
    if owner is None and base.tenant is not None:
        raise InvalidInput(f"{ref.name} is public; a public model needs a public base, not the private "
                           f"{base.ref}", param="name")
    if ":" in name:
        if registry.find_key(key_of(owner, ref)) is not None:
            raise Conflict(f"model {ref} already exists; choose another name or tag", param="name")
        return name, owner
    tags = [i.tag for i in registry.versions(ref.name, owner)]
    if tags and not any(re.fullmatch(r"v\d+", t) for t in tags):
        raise Conflict(f"model {ref.name} already exists and is not a fine-tuned series (name:v1, name:v2...); "
                       "choose another name, or give a new name:tag", param="name")
    return name, owner


def make_splits(rows: list[Row], dataset: DatasetInfo, cfg: TrainConfig) -> Splits:
    """Training, validation and report rows (see the module docstring); seeded, so a resume sees the same."""
    if not rows:
        raise InvalidInput(f"dataset {dataset.ref} has no rows", param="dataset")
    by_split = _by_split(rows)
    train_from = "train" if dataset.counts.splits else None
    source = by_split.get(train_from, []) if train_from else rows
    if not source:
        have = ", ".join(f"{k} {len(v)}" for k, v in by_split.items() if k)
        raise InvalidInput(f"dataset {dataset.ref} has no training rows (splits: {have}); import rows into a "
                           "'train' split", param="dataset")
    train, warnings = list(range(len(source))), []
    if by_split.get("validation"):
        val_from, validation, held_out = "validation", list(range(len(by_split["validation"]))), False
    else:
        train, validation = _hold_out(source, dataset, cfg, warnings)
        val_from, held_out = train_from, True
    test = by_split.get("test", [])
    report_from, report = ("test", list(range(len(test)))) if test else (val_from, validation)

    def pick(split: str | None, positions: list[int], limit: int | None) -> RowPick:
        of = len(rows) if split is None else len(by_split.get(split, []))  # None: every row of the version
        return RowPick.of_indices(split, of, _sample(positions, limit, cfg.seed))

    picks = PlannedSplits(train=pick(train_from, train, cfg.max_train_rows),
                          validation=pick(val_from, validation, cfg.max_eval_rows),
                          report=pick(report_from, report, cfg.max_eval_rows),
                          report_split="test" if test else "validation", held_out=held_out, warnings=warnings)
    return select_splits(rows, picks, dataset.ref)


def select_splits(rows: list[Row], picks: PlannedSplits, where: str) -> Splits:
    """The rows a plan's picks name, out of the dataset version's rows (in stored order)."""
    by_split = _by_split(rows)

    def pick(p: RowPick) -> list[Row]:
        return p.select(by_split.get(p.split, []) if p.split else rows, where)

    return Splits(pick(picks.train), pick(picks.validation), pick(picks.report), picks)


def _by_split(rows: list[Row]) -> dict[str | None, list[Row]]:
    by_split: dict[str | None, list[Row]] = {}
    for row in rows:
        by_split.setdefault(row.split, []).append(row)
    return by_split


def _hold_out(train: list[Row], dataset: DatasetInfo, cfg: TrainConfig,
              warnings: list[str]) -> tuple[list[int], list[int]]:
    """Positions in ``train`` that stay training rows, and those held out for validation."""
    if len(train) < MIN_ROWS_TO_SPLIT:
        raise InvalidInput(f"dataset {dataset.ref} has {len(train)} training row(s) and no validation split: too few "
                           f"to hold out validation rows (need at least {MIN_ROWS_TO_SPLIT}); add rows or import a "
                           "validation split", param="dataset")
    out, report = split_rows(train, SplitOptions(validation=cfg.validation_fraction, test=0.0, seed=cfg.seed))
    warnings.extend(report.warnings)
    warnings.append(f"no validation split: held out {report.counts['validation']} of {len(train)} training rows "
                    f"(seed {cfg.seed}{', stratified' if report.stratified else ''})")
    return ([i for i, r in enumerate(out) if r.split == "train"],
            [i for i, r in enumerate(out) if r.split == "validation"])


def _sample(positions: list[int], limit: int | None, seed: int) -> list[int]:
    if limit is None or len(positions) <= limit:
        return positions
    picked = sorted(random.Random(seed).sample(range(len(positions)), limit))
    return [positions[i] for i in picked]

