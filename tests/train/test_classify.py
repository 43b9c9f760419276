"""Real fine-tuning jobs on an SST-2 slice: LoRA (merged) and full classifiers, prompt tuning; pause,
crash and resume; the results served through /v1/classify with their lineage and report files."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from llmos.errors import InvalidInput
from llmos.jobs import JobState
from llmos.jobs.procs import process_alive
from llmos.train import TrainEnv, TrainSpec, plan_training
from llmos.train.export import export_model
from llmos.train.loading import evaluate_stored
from llmos.jobs import register_job_kind
from tests.heldjobs import release
from tests.train.conftest import MINILM, Daemon, Home, crash, finished, import_sst2, report_of
from tests.waiting import wait_for_job, wait_until

pytestmark = pytest.mark.slow
SMALL = {"epochs": 2, "max_length": 64, "batch_size": 16}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def setup(home: Home, datasets: Path) -> None:
    home.add_builtin(MINILM)
    import_sst2(home, datasets)


def check_lineage(home: Home, ref: str, method: str, peft_type: str | None, job_id: str) -> dict:
    info = home.rt.store.registry.get(ref)
    lin = info.manifest.lineage.model_dump(mode="json")
    base = home.rt.store.registry.get(MINILM)
    dataset = home.datasets.get("sst2")
    assert lin["base"] == {"ref": base.ref, "digest": base.digest}
    assert lin["dataset"] == {"name": "sst2", "version": dataset.version, "digest": dataset.digest, "task": "classify"}
    assert (lin["method"], lin["peft_type"], lin["task"], lin["job_id"]) == (method, peft_type, "classify", job_id)
    assert lin["hyperparameters"]["max_length"] == 64 and lin["hyperparameters"]["learning_rate"] > 0
    assert set(lin["metrics"]) >= {"accuracy", "macro_f1"}
    assert info.manifest.parent.startswith(f"{base.ref}@sha256:")
    files = {f.path for f in info.manifest.files}
    assert {"eval_report.json", "loss_curve.png"} <= files
    assert (home.rt.store.registry.snapshot(home.rt.store.registry.get(ref)) / "loss_curve.png").read_bytes()[:8] == PNG
    return lin


def test_lora_classifier_through_the_api_is_merged_and_served(daemon: Daemon, home: Home) -> None:
    job = daemon.ok("/v1/training/jobs", {"model": MINILM, "dataset": "sst2", "method": "lora",
                                             "hyperparameters": SMALL, "name": "sent-lora"})
    assert job["kind"] == "train" and job["plan"]["rows"] == {"train": 320, "validation": 120}
    info = finished(daemon.jobs, job["id"])
    assert info.result_model == "sent-lora:v1"
    stored = home.rt.store.registry.get("sent-lora")  # name:latest points at the new version
    assert stored.digest == home.rt.store.registry.get("sent-lora:v1").digest
    assert stored.manifest.kind == "model" and stored.manifest.tasks == ["classify", "embed"]  # merged
    lin = check_lineage(home, "sent-lora:v1", "lora", "LORA", job["id"])
    assert lin["metrics"]["accuracy"] >= 0.65, lin["metrics"]  # chance is 0.5; a broken loop stays there
    report = report_of(home, "sent-lora:v1")
    assert set(report["per_class"]) == {"0", "1"} and report["confusion_matrix"]["labels"] == ["0", "1"]
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == report["rows"] == 120
    out = daemon.ok("/v1/classify", {"model": "sent-lora", "input": ["a wonderful, moving film", "dull and lifeless"]})
    assert [d["label"] in {"0", "1"} for d in out["data"]] == [True, True]
    assert abs(sum(out["data"][0]["scores"].values()) - 1.0) < 1e-4


def test_full_classifier_survives_a_pause_and_a_crash_and_loses_no_step(daemon: Daemon, home: Home) -> None:
    spec = TrainSpec.parse({"base": MINILM, "dataset": "sst2", "method": "full", "name": "sent-full",
                            "hyperparameters": {**SMALL, "checkpoint_steps": 5}})
    plan = plan_training(TrainEnv.of(home.rt), spec)
    register_job_kind("train-held", "tests.heldjobs:train_held_at", replace=True)  # the real loop, held at 7 and 14
    first = home.runner()
    job_id = first.submit("train-held", {**plan.job_spec(), "hold_at": [7, 14]})  # the plan travels with the job
    job, work = (first, job_id), home.rt.settings.jobs_dir / job_id / "work"
    wait_until(lambda: first.get(job_id).progress.step == 7, "training held at step 7", job=job)
    first.pause(job_id, free_memory=True)  # checkpoint and exit the runner
    wait_for_job(first, job_id, JobState.PAUSED)
    wait_until(lambda: first.get(job_id).pid is None, "the paused runner gone", job=job)
    paused = first.get(job_id)
    assert paused.progress.step == 7 and paused.checkpoint and Path(paused.checkpoint).name == "checkpoint-7"
    assert (Path(paused.checkpoint) / "optimizer.pt").is_file() and (Path(paused.checkpoint) / "trainer_state.json").is_file()
    release(work, 7)
    first.resume(job_id)
    wait_until(lambda: first.get(job_id).progress.step == 14, "resumed training held at step 14", job=job)
    crash(first)  # the daemon dies, then its runner is killed mid-epoch
    pid = first.get(job_id).pid
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not process_alive(pid, None), "the runner dead")
    release(work, 14)
    second = home.runner()  # a restarted daemon requeues the job from its last checkpoint
    info = finished(second, job_id)
    assert info.attempts == 3 and second.logs(job_id).count("resuming training from checkpoint") == 2
    report = report_of(home, info.result_model)
    steps = [step for step, _ in report["training"]["loss_history"]]
    assert steps == list(range(1, report["training"]["max_steps"] + 1))  # every step once, none lost
    lin = check_lineage(home, info.result_model, "full", None, job_id)
    assert lin["metrics"]["accuracy"] >= 0.65, lin["metrics"]
    out = daemon.ok("/v1/classify", {"model": "sent-full", "input": ["an utterly charming and hilarious film"]})
    assert out["data"][0]["label"] in {"0", "1"}
    again = evaluate_stored(home.rt.store.registry, home.datasets, "sent-full", "sst2", "validation")
    assert again.rows == 120 and abs(again.metrics["accuracy"] - lin["metrics"]["accuracy"]) < 1e-6


def test_prompt_tuning_gives_an_adapter_with_an_engine_of_its_own(daemon: Daemon, home: Home, tmp_path: Path) -> None:
    job = daemon.ok("/v1/training/jobs", {"model": MINILM, "dataset": "sst2", "method": "prompt",
                                             "hyperparameters": {**SMALL, "max_steps": 6, "num_virtual_tokens": 8},
                                             "suffix": "prompt"})
    info = finished(daemon.jobs, job["id"])
    stored = home.rt.store.registry.get(info.result_model)
    assert info.result_model == f"{MINILM}-prompt:v1"
    assert stored.manifest.kind == "adapter" and stored.manifest.architecture == "prompt_tuning"
    assert stored.manifest.tasks == ["classify"] and stored.manifest.labels == ["0", "1"]
    check_lineage(home, info.result_model, "prompt", "PROMPT_TUNING", job["id"])
    out = daemon.ok("/v1/classify", {"model": f"{MINILM}-prompt", "input": ["great fun", "a waste of time"]})
    assert all(set(d["scores"]) == {"0", "1"} for d in out["data"])
    running = {m.model for m in daemon.kernel.ps() if m.loaded}
    base = home.rt.store.registry.get(MINILM)
    assert stored.key in running and base.key not in running  # its own engine (latest runs pinned to v1)
    with pytest.raises(InvalidInput, match="cannot be merged"):
        export_model(home.rt.store.registry, info.result_model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
