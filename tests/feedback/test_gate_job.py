"""The gate runs as an ``evaluate`` job in a runner process (like any job: listed, admitted, yielding to
traffic), and the loop's decision is the verdict that job stored. Real MiniLM, real SST-2 rows: two
versions of a sentiment prompt task, one whose label descriptions are right and one whose are swapped,
so the better version is known without training anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.data import ImportOptions
from llmos.feedback import Loop
from llmos.feedback.evaluate_job import EvaluateResult, EvaluateSpec
from llmos.jobs import JobInfo, JobRunner, JobState
from llmos.prompt_tasks import create_prompt_task
from llmos.store.importer import ImportOptions as ModelImport
from tests.feedback.conftest import LoopHome
from tests.prompt_tasks.conftest import sst2_dev
from tests.train.conftest import MINILM, finished
from tests.conftest import ModuleDirs

RIGHT = {"negative": "a negative, bad review", "positive": "a positive, good review"}
SWAPPED = {"negative": RIGHT["positive"], "positive": RIGHT["negative"]}


@pytest.fixture(scope="module")
def gate_home(minilm_dir: Path, module_dirs: ModuleDirs) -> Iterator[LoopHome]:
    h = LoopHome(module_dirs("gate") / "home", None)  # type: ignore[arg-type] - MiniLM only
    h.rt.store.importer.import_path(minilm_dir, MINILM, ModelImport(license="apache-2.0"))
    yield h
    h.close()


def round_dataset(home: LoopHome, datasets: Path) -> str:
    """A round's dataset: validation rows and held-out feedback (the ``test`` split)."""
    rows = sst2_dev(datasets, 48)
    tmp = home.root.parent / "round"
    tmp.mkdir(exist_ok=True)
    for split, part in (("validation", rows[:24]), ("test", rows[24:])):
        (tmp / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{g}\n" for t, g in part),
                                          encoding="utf-8")
    home.datasets.import_file(tmp / "validation.tsv", "senti-feedback", ImportOptions(split="validation"))
    return home.datasets.import_file(tmp / "test.tsv", "senti-feedback", ImportOptions(split="test", append=True)).ref


def trained(home: LoopHome, loop: Loop, job_id: str, candidate: str, dataset: str) -> None:
    """The policy as a finished retrain leaves it (the train job itself is not what this test is about)."""
    loop.jobs.store.create(job_id, "train", {"dataset": dataset}, "default")
    assert loop.jobs.store.transition(job_id, JobState.RUNNING)
    assert loop.jobs.store.transition(job_id, JobState.SUCCEEDED, job={"result_model": candidate})
    serving = home.rt.store.registry.get("senti:latest").digest
    loop.policies.update("senti", "default", state="training", job_id=job_id, candidate=candidate, baseline=serving,
                         round_cutoff=7)


def gate(loop: Loop, jobs: JobRunner) -> tuple[list[str], JobInfo, EvaluateSpec, EvaluateResult]:
    """Tick to queue the gate, let the runner run it, tick to decide."""
    assert loop.tick() == ["loop.gate_started"]
    state = loop.policies.get("senti", "default")
    assert state.state == "gating" and state.job_id
    listed = [j for j in jobs.list() if j.id == state.job_id]
    assert [j.kind for j in listed] == ["evaluate"]  # a job like any other, in the job list
    info = finished(jobs, state.job_id)
    return loop.tick(), info, EvaluateSpec.model_validate(info.spec), EvaluateResult.model_validate(info.result)


@pytest.mark.slow
def test_the_gate_is_an_evaluate_job_whose_verdict_drives_the_loop(gate_home: LoopHome, datasets: Path) -> None:
    reg = gate_home.rt.store.registry
    create_prompt_task(reg, "senti", MINILM, kind="classify", labels=["negative", "positive"], descriptions=SWAPPED)
    create_prompt_task(reg, "senti", MINILM, kind="classify", labels=["negative", "positive"], descriptions=RIGHT)
    reg.tag("senti:v0", "senti:latest", replace=True)  # the swapped version serves
    dataset = round_dataset(gate_home, datasets)
    jobs = gate_home.runner()
    loop = Loop(gate_home.rt, jobs)
    loop.policies.set("senti", "default", {"margin": 0.05})

    trained(gate_home, loop, "job-round-1", "senti:v1", dataset)
    actions, info, spec, result = gate(loop, jobs)
    assert actions == ["loop.gate_passed", "loop.canary_started"]
    assert spec.models == ["senti:v1", "senti:v0"] and spec.base == f"{MINILM}:latest" and spec.dataset == dataset
    assert result.gate is not None and result.gate.passed and result.rows == {"validation": 24, "feedback": 24}
    assert result.reports["senti:v1"]["feedback"].rows == 24  # full reports are kept with the scores
    event = loop.history("senti", "default")["events"][-2]
    assert event["action"] == "loop.gate_passed" and event["job"] == info.id
    assert event["candidate_scores"] == result.scores["senti:v1"] == result.gate.candidate_scores
    assert event["serving_scores"] == result.scores["senti:v0"]
    assert loop.policies.get("senti", "default").state == "canary"

    # the other way round: the swapped version as the candidate is rejected, the serving version untouched
    loop.rollback("senti", "default", "alice")  # ends the canary
    reg.tag("senti:v1", "senti:latest", replace=True)
    trained(gate_home, loop, "job-round-2", "senti:v0", dataset)
    actions, info, spec, result = gate(loop, jobs)
    assert actions == ["loop.gate_rejected"] and result.gate is not None and not result.gate.passed
    assert "< margin 0.05" in result.gate.reason
    assert reg.get("senti:latest").digest == reg.get("senti:v1").digest
    state = loop.policies.get("senti", "default")
    assert (state.state, state.job_id, state.feedback_cutoff) == ("idle", None, 7)
