"""A manifest: the immutable record of one model version's files and metadata."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class FileEntry(BaseModel):
    path: str  # relative path inside the model folder, e.g. "config.json" or "1_Pooling/config.json"
    digest: str
    size: int


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
    lineage: dict[str, Any] = Field(default_factory=dict)  # job id, dataset hash, method, metrics...
    # Engine kinds that can run it, preferred first: "llamacpp" (a .gguf file is stored), "hf"
    # (safetensors weights). Empty in manifests written before engine kinds existed: hf.
    engines: list[str] = Field(default_factory=list)

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
        return f"{self.name}:{self.tag}"
