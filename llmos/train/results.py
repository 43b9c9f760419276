"""The results the learning job kinds store (``jobs.result``): typed here, written and read back with
the same model, so the runner that writes a result and the daemon or tuning job that reads it agree."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TrainJobResult(BaseModel):
    """A ``train`` job that registered its model (``jobs.result``; also what the API shows)."""

    model_config = ConfigDict(extra="forbid")

    model: str  # the new version, name:vN
    kind: str  # manifest kind: "model" or "adapter"
    task: str | None = None
    method: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    eval_split: str | None = None
    training: dict[str, Any] = Field(default_factory=dict)  # TrainingSummary without its loss history


class TuneJobResult(TrainJobResult):
    """A ``tune`` job: the promoted trial's model plus the study's summary."""

    study: dict[str, Any] | None = None


class TrialResult(BaseModel):
    """A ``train`` job run as a tuning trial: its score and where its (unregistered) model lies."""

    model_config = ConfigDict(extra="forbid")

    trial: int | None
    metric: str
    value: float | None  # the validation metric at the best checkpoint
    metrics: dict[str, float]
    result_dir: str
    training: dict[str, Any] = Field(default_factory=dict)
