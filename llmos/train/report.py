"""The typed results of learning that other layers read: evaluation reports and training summaries.

``EvalReport`` is what every evaluation returns (a fine-tuned model's ``task.report``, ``llmos eval`` on
a stored model, a prompt task scored through its serving path, the loop's gate): its ``metrics`` are
the headline numbers lineage records; the other sections depend on the task. ``to_json()`` is the
form written to ``eval_report.json`` and sent over HTTP: the sections a task has, in a fixed order
(the same keys and order the reports always had). No torch here: the daemon reads reports too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ClassScores(BaseModel):
    """Precision / recall / F1 / support of one class or entity type."""

    precision: float
    recall: float
    f1: float
    support: int


class ConfusionMatrix(BaseModel):
    labels: list[str]
    matrix: list[list[int]]  # rows: gold label, columns: predicted label, in ``labels`` order


class SampleAnswer(BaseModel):
    """One generated answer of an sft report, for a person to read."""

    prompt: str
    reference: str
    generated: str


class TrainingSummary(BaseModel):
    """How a training run went (``loss_history`` stays in the report; lineage keeps the rest)."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    steps: int
    max_steps: int | None = None
    best_step: int | None = None
    best_metric: float | None = None
    stopped_early: bool = False
    first_loss: float | None = None
    last_loss: float | None = None
    runtime_s: float | None = None
    samples_per_second: float | None = None
    loss_history: list[tuple[int, float]] = Field(default_factory=list)  # [step, loss] pairs

    def without_history(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"loss_history"})


class EvalReport(BaseModel):
    """An evaluation report; sections a task does not have stay ``None`` and are left out of ``to_json``."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")  # a NaN loss is written as NaN

    task: str  # "classify", "tag" or "sft"
    rows: int
    tokens: int | None = None  # tag: gold tokens scored
    generated_rows: int | None = None  # sft: rows whose answers were generated
    metrics: dict[str, float]
    per_class: dict[str, ClassScores] | None = None  # classify
    unseen_labels: dict[str, int] | None = None  # classify: gold labels the model never learned
    confusion_matrix: ConfusionMatrix | None = None  # classify
    per_entity: dict[str, ClassScores] | None = None  # tag
    unseen_tags: dict[str, int] | None = None  # tag
    samples: list[SampleAnswer] | None = None  # sft
    model: str | None = None  # what was scored (``llmos eval``)
    dataset: str | None = None
    split: str | None = None
    training: TrainingSummary | None = None  # a training job's report
    # Each row's score, in row order, for paired comparisons (the loop's gate): classify 1/0 for a right
    # label, tag the row's entity F1, sft chrF of the greedy answer (its generated rows only).
    per_row: list[float] | None = None
    answers: list[str] | None = None  # sft: every greedy answer, in row order (a gate's judge compares them)

    def metric(self, name: str) -> float:
        return float(self.metrics[name])

    def to_json(self) -> dict[str, Any]:
        """The report as JSON data: the sections it has, in field order."""
        return {k: v for k, v in self.model_dump(mode="json", exclude={"per_row", "answers"}).items()
                if getattr(self, k) is not None}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    def write(self, path: Path) -> Path:
        path.write_text(self.dumps())
        return path

    @classmethod
    def read(cls, path: Path) -> "EvalReport":
        return cls.model_validate_json(path.read_text())
