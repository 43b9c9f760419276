"""A manifest: the immutable record of one model version's files and metadata."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from llmos.errors import InvalidInput


class FileEntry(BaseModel):
    path: str  # relative path inside the model folder, e.g. "config.json" or "1_Pooling/config.json"
    digest: str
    size: int


class _AsGiven(BaseModel):
    """Serialises exactly the keys it was given (extras included), never a default it filled in: a
    manifest's digest is the hash of its JSON, so reading one and writing it back must not change it."""

    model_config = ConfigDict(extra="allow")

    @model_serializer(mode="wrap")
    def _as_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        given = self.model_fields_set | set(self.model_extra or {})
        return {k: v for k, v in data.items() if k in given}

    def __bool__(self) -> bool:
        return bool(self.model_fields_set or self.model_extra)


class LineageBase(_AsGiven):
    """The model a version was made from."""

    ref: str
    digest: str | None = None


class LineageDataset(_AsGiven):
    """The dataset version a model was trained on."""

    name: str
    version: int
    digest: str | None = None
    task: str | None = None


class Lineage(_AsGiven):
    """Where a model version came from: base, dataset, method, hyperparameters, metrics, job...

    Every field is optional (an imported model has none; a built-in says only that it is one) and
    entries llmos does not know are kept as they are, so older and newer manifests read and write
    back byte for byte."""

    base: LineageBase | None = None
    dataset: LineageDataset | None = None
    task: str | None = None
    method: str | None = None
    peft_type: str | None = None
    hyperparameters: dict[str, Any] | None = None
    metrics: dict[str, float | int] | None = None  # the evaluation report's headline numbers
    eval_split: str | None = None
    eval_rows: int | None = None  # rows of ``eval_split`` the metrics were measured on
    training: dict[str, Any] | None = None  # the training summary, without its loss history
    job_id: str | None = None  # the job that made it
    files: dict[str, str] | None = None  # role -> file in the manifest (report, loss curve)
    tuning: dict[str, Any] | None = None  # the study a tuning job promoted it from
    started_from: LineageBase | None = None  # the adapter a LoRA run continued (its weights, not a fresh init)
    prompt_task: dict[str, Any] | None = None  # a prompt task's spec
    builtin: bool | None = None
    description: str | None = None
    converted_from: str | None = None  # "pickle": the weights were converted on import

    def with_(self, **entries: Any) -> "Lineage":
        """A copy with ``entries`` added or replaced."""
        return Lineage.model_validate({**self.model_dump(mode="json"), **entries})


class ManifestData(BaseModel):
    """What a model is. Its digest is the sha256 of its canonical JSON, so equal content, equal digest."""

    kind: str = "model"  # "model" (full weights) or "adapter" (a PEFT adapter over ``parent``)
    files: list[FileEntry]
    architecture: str
    model_type: str | None = None
    tasks: list[str]
    parameters: int = 0
    dtype: str | None = None
    size_bytes: int = 0
    context_length: int | None = None
    chat_template: str | None = None
    labels: list[str] = Field(default_factory=list)
    license: str | None = None
    source: str
    parent: str | None = None  # "name:tag@sha256:..." of the base for adapters and fine-tunes
    lineage: Lineage = Field(default_factory=Lineage)  # job id, dataset hash, method, metrics...
    # Engine kinds that can run it, preferred first: "llamacpp" (a .gguf file is stored), "hf"
    # (safetensors weights). Empty in manifests written before engine kinds existed: hf.
    engines: list[str] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _omit_no_engines(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A manifest without engine kinds dumps as it was written, so its digest stays what it was."""
        data: dict[str, Any] = handler(self)
        if not data.get("engines"):
            data.pop("engines", None)
        return data

    def digest(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def file(self, path: str) -> FileEntry | None:
        return next((f for f in self.files if f.path == path), None)


class ModelInfo(BaseModel):
    """A name:tag with its manifest, as the registry returns it."""

    name: str
    tag: str
    digest: str
    manifest: ManifestData
    created_at: datetime
    tenant: str | None = None

    @property
    def ref(self) -> str:
        """``name:tag``: the model as its tenant (or, for a public model, everyone) names it."""
        return f"{self.name}:{self.tag}"

    @property
    def key(self) -> str:
        """``tenant/name:tag`` (``name:tag`` when public): unique across tenants; engines, workers and
        caches are keyed by it, so two tenants' ``NAME`` never share weights by accident."""
        return f"{self.tenant}/{self.ref}" if self.tenant else self.ref

    @property
    def public(self) -> bool:
        return self.tenant is None


PROMPT_TASK_KIND = "prompt_task"
"""Manifest kind of a task defined by a prompt over a stored base (no files of its own)."""


def is_prompt_task(info: ModelInfo) -> bool:
    return info.manifest.kind == PROMPT_TASK_KIND


def parent_ref(info: ModelInfo) -> str:
    """The stored model a prompt task runs on (``name:tag``, without the pinned digest)."""
    if not info.manifest.parent:
        raise InvalidInput(f"prompt task {info.ref} has no base model recorded")
    return info.manifest.parent.split("@", 1)[0]
