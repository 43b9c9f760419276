"""Hyperparameter search: a real tiny study (trials as train jobs, pruning, the best promoted and served
with its study summary), and bad studies refused before anything is queued."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmos.cli import app as cli
from llmos.cli.tune import _space
from llmos.data.rows import Task
from llmos.errors import ExitCode, InvalidInput
from llmos.jobs.types import JobPaths, JobState
from llmos.train.config import Hyperparameters
from llmos.train.space import default_space, parse_dimension, resolve_space
from tests.train.conftest import MINILM, Daemon, Home, finished, import_sst2
from tests.waiting import wait_for_job

FIXED = {"max_length": 32, "batch_size": 8, "max_steps": 4, "eval_steps": 2, "early_stopping_patience": 0}


@pytest.fixture(scope="module", autouse=True)
def setup(home: Home, datasets: Path) -> None:
    home.add_builtin(MINILM)
    import_sst2(home, datasets, train=64, dev=32)


def refused(daemon: Daemon, match: str, status: int = 400, **body: object) -> None:
    before = len(daemon.jobs.list())
    r = daemon.post("/v1/tuning/jobs", {"model": MINILM, "dataset": "sst2", **body})
    assert r.status_code == status, r.text
    assert match in r.json()["error"]["message"], r.json()["error"]["message"]
    assert len(daemon.jobs.list()) == before  # nothing queued


@pytest.mark.parametrize(("body", "match"), [
    ({"space": {"dropout_rate": "0.1:0.3"}}, "'dropout_rate' cannot be searched; searchable hyperparameters: "
                                             "learning_rate, epochs"),
    ({"space": {"max_steps": "1:10"}}, "'max_steps' cannot be searched"),
    ({"space": {"learning_rate": "1e-3:1e-5:log"}}, "space.learning_rate: empty range: low 0.001 must be below"),
    ({"space": {"warmup_ratio": "0.1:0.1"}}, "empty range"),
    ({"space": {"lora_r": ""}}, "space.lora_r: empty"),
    ({"space": {"batch_size": []}}, "choices is empty"),
    ({"space": {"learning_rate": "0:1e-3:log"}}, "a log range must start above 0"),
    ({"space": {"learning_rate": "1e-4:2"}}, "2.0 is not a valid learning_rate"),
    ({"space": {"epochs": "1.5:3"}}, "epochs takes whole numbers"),
    ({"space": {"lora_r": "4,8"}}, "method full does not use lora_r"),
    ({"space": {"learning_rate": "1e-5:1e-3"}, "hyperparameters": {"learning_rate": 1e-4}},
     "learning_rate is fixed in hyperparameters"),
    ({"trials": 0}, "trials: Input should be greater than or equal to 1"),
    ({"trials": -3}, "trials: Input should be greater than or equal to 1"),
    ({"hyperparameters": {"lr": 0.1}}, "hyperparameters.lr: Extra inputs are not permitted"),
    ({"dataset": "no-such-data", "status": 404}, "dataset 'no-such-data' not found"),
])
def test_bad_studies_are_refused_before_anything_is_queued(daemon: Daemon, body: dict, match: str) -> None:
    refused(daemon, match, **body)


def test_the_space_parses_text_lists_and_objects_and_defaults_fit_the_method() -> None:
    assert parse_dimension("learning_rate", "1e-5:1e-3:log").model_dump() == \
        {"low": 1e-5, "high": 1e-3, "log": True, "choices": None}
    assert parse_dimension("lora_r", "4,8,16").choices == [4, 8, 16]
    assert parse_dimension("lora_r", [4, 8]).choices == [4, 8]
    assert parse_dimension("warmup_ratio", {"low": 0, "high": 0.2}).high == 0.2
    assert "lora_r" in default_space(Task.classify, "lora") and "lora_r" not in default_space(Task.classify, "full")
    assert "num_virtual_tokens" in default_space(Task.tag, "prefix")
    fixed = Hyperparameters.model_validate({"learning_rate": 1e-4, "epochs": 2, "batch_size": 8, "warmup_ratio": 0.0})
    with pytest.raises(InvalidInput, match="the search space is empty"):
        resolve_space({}, fixed, Task.classify, "full")
    with pytest.raises(InvalidInput, match="expected KNOB=low:high"):
        _space(["learning_rate"])


@pytest.mark.slow
def test_llmos_tune_prints_the_plan_and_refuses_a_bad_space(daemon: Daemon) -> None:
    run = CliRunner().invoke
    bad = run(cli, ["tune", MINILM, "sst2", "--space", "lora_r=4,8", "--url", daemon.url])
    assert isinstance(bad.exception, InvalidInput) and bad.exception.exit_code == ExitCode.USAGE
    assert "method full does not use lora_r" in str(bad.exception)
    ok = run(cli, ["tune", MINILM, "sst2", "-n", "2", "--method", "lora", "-s", "lora_r=4,8", "-p", "max_steps=2",
                   "--sampler", "random", "--url", daemon.url], env={"COLUMNS": "200"})
    assert ok.exit_code == 0, ok.output
    assert "2 trials of classify / lora" in ok.output and "maximize validation accuracy" in ok.output
    job_id = ok.output.split()[1].rstrip(":")
    tune = daemon.jobs.get(job_id)
    assert tune.kind == "tune" and tune.spec["sampler"] == "random" and tune.spec["space"]["lora_r"]["choices"] == [4, 8]
    daemon.jobs.cancel(job_id)  # its runner (if it started) cancels the trial it queued
    assert wait_for_job(daemon.jobs, job_id).state == JobState.CANCELLED
    for trial in [j for j in daemon.jobs.list() if (j.spec.get("trial") or {}).get("of") == job_id]:
        assert wait_for_job(daemon.jobs, trial.id).state == JobState.CANCELLED


@pytest.mark.slow
def test_a_tiny_study_runs_trials_as_jobs_and_promotes_the_best(daemon: Daemon, home: Home) -> None:
    job = daemon.ok("/v1/tuning/jobs", {
        "model": MINILM, "dataset": "sst2", "method": "lora", "hyperparameters": FIXED, "trials": 3,
        "startup_trials": 1, "space": {"learning_rate": "1e-6:3e-3:log", "lora_r": [4, 8]}, "name": "sent-tuned"})
    assert job["kind"] == "tune" and job["plan"]["metric"] == "accuracy" and job["plan"]["direction"] == "maximize"
    assert job["plan"]["space"] == {"learning_rate": "1e-06:0.003:log", "lora_r": "4,8", "warmup_ratio": "0:0.1",
                                    "lora_dropout": "0:0.2"}  # the user's two + the other defaults
    assert job["plan"]["output"] == "sent-tuned" and job["plan"]["rows"] == {"train": 64, "validation": 32}
    info = finished(daemon.jobs, job["id"])  # max_jobs is 1: the trials still get their slot

    trials = daemon.http.get(f"/v1/tuning/jobs/{job['id']}/trials").json()["data"]
    assert [t["spec"]["trial"] for t in trials] == [{"of": job["id"], "number": n} for n in range(3)]
    assert all(t["kind"] == "train" and t["progress"]["step"] > 0 for t in trials)  # each a job with progress
    states = {t["spec"]["trial"]["number"]: t["state"] for t in trials}
    assert set(states.values()) <= {"succeeded", "cancelled"} and "succeeded" in states.values()
    assert all("pruned" in (t["reason"] or "") for t in trials if t["state"] == "cancelled")

    study = info.result["study"]
    assert study["counts"]["complete"] + study["counts"]["pruned"] == 3 and study["counts"]["failed"] == 0
    done = [t for t in study["trials"] if t["state"] == "complete"]
    best = study["best"]
    assert best["value"] == max(t["value"] for t in done) and 0.0 <= best["value"] <= 1.0
    assert all(t["intermediate"] for t in study["trials"])  # every validation reported to the study
    assert [t["state"] for t in study["trials"]] == [
        {"succeeded": "complete", "cancelled": "pruned"}[states[n]] for n in range(3)]

    reg = home.rt.store.registry
    assert info.result_model == "sent-tuned:v1" and reg.get("sent-tuned").digest == reg.get("sent-tuned:v1").digest
    lin = reg.get("sent-tuned:v1").manifest.lineage.model_dump(mode="json")
    assert lin["job_id"] == job["id"] and lin["tuning"]["best"] == best
    assert lin["tuning"]["counts"] == study["counts"] and len(lin["tuning"]["trials"]) == 3
    assert lin["hyperparameters"]["learning_rate"] == pytest.approx(best["params"]["learning_rate"])
    assert lin["hyperparameters"]["lora_r"] == best["params"]["lora_r"] and lin["method"] == "lora"
    assert lin["hyperparameters"]["max_length"] == 32
    stored = json.loads((reg.snapshot("sent-tuned:v1") / "study.json").read_text())
    assert stored["best"] == best and [t["number"] for t in stored["trials"]] == [0, 1, 2]
    for t in trials:  # trial folders and checkpoints are cleaned once the best is registered
        paths = JobPaths.of(home.rt.settings.jobs_dir, t["id"])
        assert not (paths.work / "result").exists() and not paths.checkpoints.exists()

    out = daemon.ok("/v1/classify", {"model": "sent-tuned", "input": ["a joyous, warm film", "tedious and flat"]})
    assert all(d["label"] in {"0", "1"} for d in out["data"])
    assert daemon.jobs.get(job["id"]).state == JobState.SUCCEEDED
