"""A real chat SFT (LoRA) of SmolLM2 on a code_alpaca slice: the loss falls, the adapter keeps the
base's chat template, is served through /v1/chat/completions in the base's batches, and exports merged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos.data import ImportOptions
from llmos.train.export import export_model
from tests.train.conftest import SMOL, Daemon, Home, finished, report_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def setup(home: Home, datasets: Path) -> None:
    home.add_builtin(SMOL)
    rows = json.loads((datasets / "code_alpaca_2k/code_alpaca_2k.json").read_text())
    short = [r for r in rows if len(r["instruction"]) + len(r["input"]) + len(r["output"]) < 160][:16]
    path = home.root.parent / "slices" / "code.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(short))
    home.datasets.import_file(path, "code", ImportOptions(task="sft"))


def test_chat_sft_lowers_the_loss_and_the_adapter_is_served(daemon: Daemon, home: Home, tmp_path: Path) -> None:
    job = daemon.ok("/v1/training/jobs", {"model": SMOL, "dataset": "code", "hyperparameters": {
        "epochs": 3, "max_length": 96, "batch_size": 4, "learning_rate": 1e-3, "lora_r": 8,
        "report_rows": 2, "max_new_tokens": 12}})
    assert job["plan"]["method"] == "lora" and job["plan"]["rows"] == {"train": 14, "validation": 2}
    info = finished(daemon.jobs, job["id"])
    name = f"{SMOL}-code"
    assert info.result_model == f"{name}:v1"
    stored, base = home.rt.store.registry.get(name), home.rt.store.registry.get(SMOL)
    assert stored.manifest.kind == "adapter" and stored.manifest.architecture == "lora"
    assert stored.manifest.parent == f"{base.ref}@{base.digest}"
    assert stored.manifest.chat_template == base.manifest.chat_template  # trained with it, served with it
    report = report_of(home, info.result_model)
    history = [loss for _, loss in report["training"]["loss_history"]]
    per_epoch = len(history) // 3
    first, last = history[:per_epoch], history[-per_epoch:]
    assert sum(last) / len(last) < 0.8 * sum(first) / len(first), history  # the loss falls
    assert report["generated_rows"] == 2 and set(report["metrics"]) >= {"loss", "exact_match", "token_f1"}
    reply = daemon.ok("/v1/chat/completions", {"model": name, "max_tokens": 8, "temperature": 0,
                                               "messages": [{"role": "user", "content": "Print hello in Python."}]})
    assert reply["choices"][0]["message"]["content"].strip()
    assert {m.model for m in daemon.kernel.ps() if m.loaded} >= {base.ref}  # the base's worker serves the adapter
    out = export_model(home.rt.store.registry, name, tmp_path / "merged")
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= files
    assert (out / "chat_template.jinja").read_text() == base.manifest.chat_template
    assert not list(out.glob("adapter_*"))
