"""Real fine-tunes through the official openai client: a chat file trains a SmolLM2 LoRA adapter that is
then chatted with by its ``fine_tuned_model`` name; an SST-2 file (with a validation file) trains
MiniLM-L6 as a classifier whose checkpoints and metrics come back in OpenAI's shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai import OpenAI

from tests.train.conftest import MINILM, SMOL, Daemon, Home, finished

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def models(home: Home) -> None:
    home.add_builtin(SMOL)
    home.add_builtin(MINILM)


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> OpenAI:
    return OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0)


def chat_jsonl(datasets: Path, n: int) -> bytes:
    """``n`` short code_alpaca rows as chat ``messages`` lines."""
    rows = json.loads((datasets / "code_alpaca_2k/code_alpaca_2k.json").read_text())
    short = [r for r in rows if len(r["instruction"]) + len(r["input"]) + len(r["output"]) < 160][:n]
    lines = []
    for r in short:
        ask = r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")
        lines.append({"messages": [{"role": "user", "content": ask}, {"role": "assistant", "content": r["output"]}]})
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def sst2_jsonl(datasets: Path, split: str, n: int, skip: int = 0) -> bytes:
    lines = (datasets / f"sst2/{split}.tsv").read_text(encoding="utf-8").splitlines()[1 + skip:1 + skip + n]
    rows = [line.rsplit("\t", 1) for line in lines]
    return "".join(json.dumps({"text": t.strip(), "label": int(y)}) + "\n" for t, y in rows).encode()


def test_a_chat_file_trains_a_lora_adapter_that_serves_chat_by_its_name(client: OpenAI, daemon: Daemon,
                                                                       datasets: Path) -> None:
    f = client.files.create(file=("code.jsonl", chat_jsonl(datasets, 20)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=SMOL, training_file=f.id, suffix="code",
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 9, "learning_rate_multiplier": 5,
            "max_length": 96, "report_rows": 1, "max_new_tokens": 4}}})  # llmos's own knobs keep it tiny
    assert job.status in ("queued", "validating_files", "running") and job.model_extra["llmos"]["method"] == "lora"  # type: ignore[index]
    assert job.hyperparameters.learning_rate_multiplier == 5
    finished(daemon.jobs, job.id)
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.finished_at is not None and done.error is None
    assert done.fine_tuned_model is not None and done.fine_tuned_model.startswith(f"ft:{SMOL}:code:")  # OpenAI's form
    assert job.id in [j.id for j in client.fine_tuning.jobs.list()]
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert events[0].message == "Job succeeded"  # newest first
    steps = [e for e in events if e.type == "metrics" and e.data.get("train_loss") is not None]  # type: ignore[union-attr]
    assert steps and steps[0].data["step"] == 2  # type: ignore[index]  # 18 training rows / 9 a batch
    reply = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": "Print hello in Python."}])
    stored = done.fine_tuned_model.replace(":", "-")  # stored as ft-BASE-SUFFIX-ID
    assert reply.model == f"{stored}:v1" and reply.choices[0].message.content  # the exact version that answered


def test_a_classification_file_with_a_validation_file_trains_minilm(client: OpenAI, daemon: Daemon,
                                                                     datasets: Path) -> None:
    train = client.files.create(file=("sst2-train.jsonl", sst2_jsonl(datasets, "train", 64, skip=2000)),
                                purpose="fine-tune")
    valid = client.files.create(file=("sst2-dev.jsonl", sst2_jsonl(datasets, "dev", 32)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MINILM, training_file=train.id, validation_file=valid.id,
                                         hyperparameters={"n_epochs": 1, "batch_size": 16, "max_length": 64,
                                                          "checkpoint_steps": 2})
    llmos = job.model_extra["llmos"]  # type: ignore[index]
    assert llmos["task"] == "classify" and llmos["method"] == "full" and job.validation_file == valid.id
    finished(daemon.jobs, job.id)
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.fine_tuned_model.startswith(f"ft:{MINILM}::")  # type: ignore[union-attr]
    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in checkpoints] == [4, 2]  # every 2 steps and the last, newest first
    assert checkpoints[0].metrics.train_loss is not None and checkpoints[0].fine_tuning_job_id == job.id
    evals = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.message.startswith("Validation")]
    assert evals and evals[0].data["valid_loss"] is not None  # type: ignore[index]
    r = daemon.post("/v1/classify", {"model": done.fine_tuned_model, "input": ["a wonderful, moving film"]})
    assert r.status_code == 200 and set(r.json()["data"][0]["scores"]) == {"0", "1"}, r.text
