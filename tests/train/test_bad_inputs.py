"""Every bad fine-tuning request is a clear error before anything is queued or registered; an
evaluation meets labels the model never learned without crashing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos.data import ImportOptions
from llmos.data.info import DatasetSource
from llmos.data.rows import ClassifyRow, Task
from llmos.store.importer import ImportOptions as ModelImport
from llmos.train import TrainEnv, TrainSpec, plan_training
from llmos.train.loading import evaluate_stored
from tests.train.conftest import MINILM, SMOL, Daemon, Home, import_sst2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def setup(home: Home, datasets: Path) -> None:
    home.add_builtin(MINILM)
    home.add_builtin(SMOL)
    import_sst2(home, datasets, train=40, dev=20)
    tmp = home.root.parent / "bad"
    tmp.mkdir(parents=True, exist_ok=True)
    code = json.loads((datasets / "code_alpaca_2k/code_alpaca_2k.json").read_text())[:12]
    (tmp / "code.json").write_text(json.dumps(code))
    ds = home.datasets
    ds.import_file(tmp / "code.json", "code", ImportOptions(task="sft"))
    (tmp / "tiny.csv").write_text("text,label\ngood,pos\nbad,neg\nfine,pos\nawful,neg\n")
    ds.import_file(tmp / "tiny.csv", "tiny")
    ds.import_file(tmp / "tiny.csv", "only-validation", ImportOptions(split="validation"))
    one_class = [ClassifyRow(text=f"row {i}", label="pos", split="train") for i in range(12)]
    one_class += [ClassifyRow(text="other", label="neg", split="validation")]
    ds._write("one-class", Task.classify, one_class, DatasetSource())  # noqa: SLF001 - import refuses such files


def refused(daemon: Daemon, status: int, match: str, **body: object) -> dict:
    request = {"model": MINILM, "dataset": "sst2", **body}
    r = daemon.post("/v1/training/jobs", request)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert match in error["message"], error["message"]
    return error


@pytest.mark.parametrize(("body", "status", "match"), [
    ({"model": "no-such-model"}, 404, "model 'no-such-model' not found"),
    ({"dataset": "no-such-data"}, 404, "dataset 'no-such-data' not found"),
    ({"dataset": "sst2@9"}, 404, "has no version 9"),
    ({"dataset": "code"}, 400, "is not a text generator"),  # sft on an encoder
    ({"task": "tag"}, 400, "holds classify rows; it cannot train task 'tag'"),
    ({"task": "summarise"}, 400, "task"),
    ({"dataset": "one-class"}, 400, "single class ('pos')"),
    ({"dataset": "only-validation"}, 400, "has no training rows"),
    ({"dataset": "tiny"}, 400, "too few to hold out validation rows"),
    ({"hyperparameters": {"lr": 0.1}}, 400, "hyperparameters.lr: Extra inputs are not permitted (got 0.1); known hyperparameters: epochs, learning_rate"),
    ({"hyperparameters": {"epochs": -1}}, 400, "hyperparameters.epochs: Input should be greater than 0"),
    ({"hyperparameters": {"batch_size": "many"}}, 400, "hyperparameters.batch_size"),
    ({"method": "dreambooth"}, 400, "unknown method 'dreambooth'; known methods: dpo, full, lora, prefix, prompt"),
    ({"method": "prefix"}, 400, "needs a decoder model"),
    ({"name": MINILM}, 409, "not a fine-tuned series"),  # never re-point another model's latest
    ({"name": f"{MINILM}:latest"}, 409, "already exists"),
    ({"name": "bad/name"}, 400, "invalid model name"),
])
def test_bad_requests_are_refused_before_anything_runs(daemon: Daemon, home: Home, body: dict, status: int,
                                                       match: str) -> None:
    models, data = home.rt.store.registry.names(), [d.ref for d in home.datasets.list(all_versions=True)]
    refused(daemon, status, match, **body)
    assert daemon.http.get("/v1/jobs").json()["data"] == []
    assert home.rt.store.registry.names() == models
    assert [d.ref for d in home.datasets.list(all_versions=True)] == data


def test_prompt_tuning_is_refused_for_tags_and_chat(daemon: Daemon, home: Home, datasets: Path) -> None:
    refused(daemon, 400, "method prompt fine-tunes classify only", model=SMOL, dataset="code", method="prompt")
    refused(daemon, 400, "method prefix cannot fine-tune sft", model=SMOL, dataset="code", method="prefix")


def test_a_generator_may_learn_to_classify(home: Home) -> None:
    """Decision: transformers has LlamaForSequenceClassification, so SmolLM2 may become a classifier."""
    plan = plan_training(TrainEnv.of(home.rt), TrainSpec.parse({"base": SMOL, "dataset": "sst2", "method": "lora"}))
    assert plan.task.name.value == "classify" and plan.output == f"{SMOL}-sst2" and plan.labels == ["0", "1"]


def test_evaluation_reports_labels_the_model_never_learned(home: Home, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    snap = home.rt.store.registry.snapshot(MINILM)
    model = AutoModelForSequenceClassification.from_pretrained(snap, num_labels=2, id2label={0: "neg", 1: "pos"},
                                                               label2id={"neg": 0, "pos": 1})
    model.save_pretrained(tmp_path / "clf")
    AutoTokenizer.from_pretrained(snap).save_pretrained(tmp_path / "clf")
    home.rt.store.importer.import_path(tmp_path / "clf", "two-labels", ModelImport())
    (tmp_path / "three.csv").write_text("text,label\ngreat,pos\nawful,neg\nso-so,meh\nfine,pos\nmeh again,meh\n")
    home.datasets.import_file(tmp_path / "three.csv", "three")
    report = evaluate_stored(home.rt.store.registry, home.datasets, "two-labels", "three").to_json()
    assert report["unseen_labels"] == {"meh": 2} and report["rows"] == 5
    assert report["per_class"]["meh"]["recall"] == 0.0 and report["per_class"]["meh"]["support"] == 2
    assert report["confusion_matrix"]["labels"] == ["neg", "pos", "meh"]
    assert report["metrics"]["accuracy"] <= 3 / 5
