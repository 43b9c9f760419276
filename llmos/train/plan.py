"""Checking a fine-tuning request before anything runs, and the splits it trains and reports on.

``plan_training`` is called by the API (and the CLI through it) before a job is queued, and again by
the job itself: every mistake a user can make is a clear error here, with nothing registered and no
job left behind. It resolves the base model, the dataset version (pinned: a later import does not
change what a queued job trains on), the task, the method and the concrete hyperparameters.

Splits: ``train`` rows train (all rows when the dataset is not split); ``validation`` rows pick the best
checkpoint and drive early stopping, and when the dataset has none they are held out of the training
rows (stratified by label, seeded); the report is made on ``test`` when there is one, else on the
validation rows.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmos.data.info import DatasetInfo
from llmos.data.registry import Datasets
from llmos.data.rows import Row, Task
from llmos.data.split import SplitOptions, split_rows
from llmos.errors import Conflict, InvalidInput
from llmos.store.manifest import ModelInfo
from llmos.store.names import key_of, parse_ref
from llmos.store.registry import Registry
from llmos.train.config import TrainConfig, TrainSpec, resolve, stretch_epochs
from llmos.train.methods import DEFAULT_METHOD, Method, get_method
from llmos.train.tasks import TrainTask, get_task

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
    report_split: str  # "test" or "validation"
    held_out: bool  # validation rows were carved out of the training rows
    warnings: list[str] = field(default_factory=list)


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

    def summary(self) -> dict[str, Any]:
        """What the API returns about a queued job's plan (and the job stores)."""
        return {"base": self.base.ref, "dataset": self.dataset.ref, "task": self.task.name.value,
                "method": self.method.name, "output": self.output, "labels": self.labels,
                "rows": {"train": len(self.splits.train), "validation": len(self.splits.validation),
                         self.splits.report_split: len(self.splits.report)},
                "hyperparameters": self.config.to_dict(), "warnings": self.splits.warnings}


def plan_training(env: TrainEnv, spec: TrainSpec) -> TrainPlan:
    """Resolve and check everything a job needs; InvalidInput / NotFound / WrongTask / Conflict otherwise."""
    base = _base(env.registry, spec.base, env.datasets.tenant)
    dataset = env.datasets.get(spec.dataset)
    task = get_task(_task(spec, dataset))
    task.check_base(base)
    method = get_method(spec.method or DEFAULT_METHOD[task.name])
    method.check(task, base)
    output, owner = _output(env.registry, spec, base, dataset)
    config = resolve(spec.hyperparameters, task.name, method.name, base.manifest.context_length)
    rows = list(env.datasets.rows(dataset.name, dataset.version))
    splits = make_splits(rows, dataset, config)
    config = stretch_epochs(config, spec.hyperparameters, task.name, len(splits.train))
    labels = task.label_set(splits.train)
    task.check_rows(splits.train, labels, f"dataset {dataset.ref}")
    pinned = spec.model_copy(update={"dataset": dataset.ref, "task": task.name, "method": method.name})
    return TrainPlan(pinned, base, dataset, task, method, config, output, owner, labels, splits)


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
    tags = [i.tag for i in registry.list() if i.name == ref.name and i.tenant == owner]
    if tags and not any(re.fullmatch(r"v\d+", t) for t in tags):
        raise Conflict(f"model {ref.name} already exists and is not a fine-tuned series (name:v1, name:v2...); "
                       "choose another name, or give a new name:tag", param="name")
    return name, owner


def make_splits(rows: list[Row], dataset: DatasetInfo, cfg: TrainConfig) -> Splits:
    """Training, validation and report rows (see the module docstring); seeded, so a resume sees the same."""
    if not rows:
        raise InvalidInput(f"dataset {dataset.ref} has no rows", param="dataset")
    by_split: dict[str | None, list[Row]] = {}
    for row in rows:
        by_split.setdefault(row.split, []).append(row)
    train = by_split.get("train", []) if dataset.counts.splits else rows
    if not train:
        have = ", ".join(f"{k} {len(v)}" for k, v in by_split.items() if k)
        raise InvalidInput(f"dataset {dataset.ref} has no training rows (splits: {have}); import rows into a "
                           "'train' split", param="dataset")
    validation, held_out, warnings = by_split.get("validation", []), False, []
    if not validation:
        train, validation = _hold_out(train, dataset, cfg, warnings)
        held_out = True
    test = by_split.get("test", [])
    report, report_split = (test, "test") if test else (validation, "validation")
    train = _sample(train, cfg.max_train_rows, cfg.seed)
    validation = _sample(validation, cfg.max_eval_rows, cfg.seed)
    report = _sample(report, cfg.max_eval_rows, cfg.seed)
    return Splits(train, validation, report, report_split, held_out, warnings)


def _hold_out(train: list[Row], dataset: DatasetInfo, cfg: TrainConfig,
              warnings: list[str]) -> tuple[list[Row], list[Row]]:
    if len(train) < MIN_ROWS_TO_SPLIT:
        raise InvalidInput(f"dataset {dataset.ref} has {len(train)} training row(s) and no validation split: too few "
                           f"to hold out validation rows (need at least {MIN_ROWS_TO_SPLIT}); add rows or import a "
                           "validation split", param="dataset")
    out, report = split_rows(train, SplitOptions(validation=cfg.validation_fraction, test=0.0, seed=cfg.seed))
    warnings.extend(report.warnings)
    warnings.append(f"no validation split: held out {report.counts['validation']} of {len(train)} training rows "
                    f"(seed {cfg.seed}{', stratified' if report.stratified else ''})")
    return [r for r in out if r.split == "train"], [r for r in out if r.split == "validation"]


def _sample(rows: list[Row], limit: int | None, seed: int) -> list[Row]:
    if limit is None or len(rows) <= limit:
        return rows
    picked = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in picked]

