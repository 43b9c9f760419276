"""A fine-tune is planned once: the plan travels in the job's spec as data, and what the runner reads
back is the same plan (same rows in each split, same settings) without splitting the dataset again.
Real MiniLM, real Banking77 rows (a dataset with no validation split, so rows are held out)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.data import ImportOptions
from llmos.errors import Conflict
from llmos.runtime import Runtime, open_runtime
from llmos.store.importer import ImportOptions as ModelImport
from llmos.train import TrainEnv, TrainSpec, plan_training
from llmos.train.hpo import TuneSpec, load_tuning, plan_tuning
from llmos.train.plan import load_plan
from llmos.train.plan_record import PlannedSpec, RowPick
from tests.conftest import ModuleDirs, make_settings
from tests.train.conftest import MINILM


@pytest.fixture(scope="module")
def rt(minilm_dir: Path, datasets: Path, module_dirs: ModuleDirs) -> Iterator[Runtime]:
    root = module_dirs("plan")
    runtime = open_runtime(make_settings(root / "home"), builtins=False)
    runtime.store.importer.import_path(minilm_dir, MINILM, ModelImport(license="apache-2.0"))
    with open(datasets / "banking77/train.csv", newline="", encoding="utf-8") as fh:
        by: dict[str, list[dict[str, str]]] = {c: [] for c in ("card_arrival", "exchange_rate", "top_up_failed")}
        for r in csv.DictReader(fh):
            by.get(r["category"], []).append(r)
    train = [r for rows in by.values() for r in rows[:100]]
    test = [r for rows in by.values() for r in rows[100:114]][:40]
    env = TrainEnv.of(runtime)
    env.datasets.import_file(write_csv(root / "train.csv", train), "intents", ImportOptions(split="train"))
    env.datasets.import_file(write_csv(root / "test.csv", test), "intents",
                             ImportOptions(split="test", append=True))
    yield runtime
    runtime.close()


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "category"])
        w.writerows((r["text"], r["category"]) for r in rows)
    return path


def test_the_runner_reads_back_the_plan_it_was_queued_with(rt: Runtime) -> None:
    env = TrainEnv.of(rt)
    spec = TrainSpec.parse({"base": MINILM, "dataset": "intents", "hyperparameters": {"max_train_rows": 200}})
    plan = plan_training(env, spec)
    assert plan.splits.held_out and len(plan.splits.validation) == 30 and len(plan.splits.train) == 200
    job_spec = json.loads(json.dumps(plan.job_spec()))  # what the jobs table stores
    assert job_spec["dataset"] == plan.dataset.ref and job_spec["base"] == MINILM  # the request, pinned
    picks = job_spec["plan"]["splits"]
    assert picks["report"] == {"split": "test", "of": 40, "rows": 40, "picked": None}  # all of them
    assert len(picks["validation"]["picked"]) <= 4 * (300 // 8 + 1) / 3 + 4  # a bitmap, not a list of rows

    parsed = PlannedSpec.parse(job_spec)
    assert parsed.plan is not None and parsed.plan == plan.record()
    again = load_plan(env, parsed, parsed.plan)
    assert again.splits.train == plan.splits.train and again.splits.validation == plan.splits.validation
    assert again.splits.report == plan.splits.report and again.labels == plan.labels
    assert again.config == plan.config and again.base.digest == plan.base.digest
    assert again.summary() == plan.summary()  # what the API answered when it queued the job


def test_a_plan_whose_data_changed_is_refused_not_retrained_on_other_rows(rt: Runtime) -> None:
    env = TrainEnv.of(rt)
    record = plan_training(env, TrainSpec.parse({"base": MINILM, "dataset": "intents"})).record()
    wrong = record.model_copy(update={"dataset": record.dataset.model_copy(update={"digest": "sha256:" + "0" * 64})})
    with pytest.raises(Conflict, match="not the version the job was planned on"):
        load_plan(env, TrainSpec.parse({"base": MINILM, "dataset": "intents"}), wrong)
    moved = record.model_copy(update={"base": record.base.model_copy(update={"digest": "sha256:" + "1" * 64})})
    with pytest.raises(Conflict, match="changed since the job was planned"):
        load_plan(env, TrainSpec.parse({"base": MINILM, "dataset": "intents"}), moved)
    short = RowPick.of_indices("train", 5, [0, 2])
    assert short.indices() == [0, 2] and RowPick.of_indices("train", 3, [0, 1, 2]).picked is None
    with pytest.raises(Conflict, match="the plan counted 5 rows"):
        short.select([], "intents@1")


def test_a_tuning_job_and_its_trials_use_the_study_plan(rt: Runtime) -> None:
    env = TrainEnv.of(rt)
    tune = plan_tuning(env, TuneSpec.parse({"base": MINILM, "dataset": "intents", "method": "lora", "trials": 2,
                                            "space": {"learning_rate": "1e-4:1e-2:log"}}))
    stored = TuneSpec.parse(json.loads(json.dumps(tune.spec.model_dump(mode="json"))))
    loaded = load_tuning(env, stored)  # no dataset read: the trials read their rows
    assert loaded.train.splits.train == [] and loaded.summary() == tune.summary()
    trial = stored.trial_spec({"learning_rate": 0.005, "batch_size": 8})
    assert trial.plan is not None and trial.plan.splits == tune.train.record().splits
    assert trial.plan.config.learning_rate == 0.005 and trial.plan.config.batch_size == 8
    assert trial.plan.config == plan_training(env, TrainSpec.parse(
        {**trial.model_dump(exclude={"plan", "trial"}), "hyperparameters": trial.hyperparameters.model_dump()})).config
