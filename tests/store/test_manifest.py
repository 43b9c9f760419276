"""Typed lineage reads every manifest written before it and writes it back byte for byte: a manifest's
digest is the hash of its JSON, so a changed serialisation would orphan every stored model."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from llmos.runtime import Runtime
from llmos.store.manifest import Lineage, LineageBase, ManifestData

TRAINED = {  # the shape a `train` job records
    "base": {"ref": "minilm-l6:latest", "digest": "sha256:" + "a" * 64},
    "dataset": {"name": "sst2", "version": 2, "digest": "sha256:" + "b" * 64, "task": "classify"},
    "task": "classify", "method": "lora", "peft_type": "LORA",
    "hyperparameters": {"epochs": 2, "learning_rate": 0.001, "target_modules": None, "extra": {}},
    "metrics": {"accuracy": 0.75, "macro_f1": 0.7}, "eval_split": "validation",
    "training": {"steps": 40, "best_metric": None, "stopped_early": False}, "job_id": "job-1",
    "files": {"report": "eval_report.json", "loss_curve": "loss_curve.png"},
    "tuning": {"metric": "accuracy", "trials": [{"number": 0, "value": None}]},
}
SHAPES: list[dict[str, Any]] = [
    {},  # an imported model
    {"builtin": True, "description": "all-MiniLM-L6-v2 sentence encoder"},
    {"converted_from": "pickle"},
    {"base": {"ref": "smollm2-135m-instruct:latest", "digest": "sha256:" + "c" * 64},
     "prompt_task": {"kind": "classify", "labels": ["a", "b"], "examples": []}},
    TRAINED,
    {"dataset": {"name": "x", "version": 1}, "method": "full", "job_id": None, "from_the_future": [1, {"k": None}]},
]


def old_digest(data: dict[str, Any]) -> str:
    """How a manifest's digest was computed when lineage was a plain dict."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize("lineage", SHAPES)
def test_every_lineage_shape_reads_and_writes_back_unchanged(lineage: dict[str, Any]) -> None:
    stored = {"kind": "model", "files": [], "architecture": "BertModel", "model_type": "bert", "tasks": ["embed"],
              "parameters": 1, "dtype": "float32", "size_bytes": 0, "context_length": 512, "chat_template": None,
              "labels": [], "license": None, "source": "test", "parent": None, "lineage": lineage}
    manifest = ManifestData.model_validate(stored)
    assert manifest.model_dump(mode="json") == stored
    assert manifest.digest() == old_digest(stored)
    assert bool(manifest.lineage) == bool(lineage)


def test_lineage_is_typed_and_a_stored_model_keeps_its_digest_when_re_tagged(runtime: Runtime) -> None:
    lin = Lineage.model_validate(TRAINED)
    assert lin.base == LineageBase(ref="minilm-l6:latest", digest="sha256:" + "a" * 64)
    assert lin.dataset is not None and lin.dataset.version == 2 and lin.metrics == {"accuracy": 0.75, "macro_f1": 0.7}
    manifest = ManifestData(files=[], architecture="BertForSequenceClassification", tasks=["classify"], source="t",
                            lineage=lin.with_(job_id="job-2"))
    info = runtime.store.registry.add("m:v1", manifest)
    assert info.manifest.lineage.job_id == "job-2" and info.manifest.lineage.tuning == TRAINED["tuning"]
    again = runtime.store.registry.tag("m:v1", "m:latest")  # reads the manifest back and writes it again
    assert again.digest == info.digest == manifest.digest()
