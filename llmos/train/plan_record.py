"""A fine-tuning plan as data: made once, before the job is queued, stored in the job's spec, and read
back by the runner (and by a tuning job for each trial) without planning again.

``PlanRecord`` pins what planning resolved: the base model (ref and digest), the dataset version
(ref and digest), task, method, the concrete settings, the result's name, the labels, and which rows
of which dataset split each of train / validation / report takes (``RowPick``: a bitmap over the
split's rows, so a held-out or sampled split costs a sixth of a byte per row, not a re-split). The
runner re-checks the two digests and the row counts, reads the dataset once for its rows, and
trains: no stratified split, no label check, no second read.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from llmos.data.rows import Row, Task
from llmos.errors import Conflict
from llmos.train.config import Hyperparameters, TrainConfig, TrainSpec, fit_to_data, resolve


class RowPick(BaseModel):
    """Rows taken from one split of the dataset version, in their stored order."""

    model_config = ConfigDict(extra="forbid")

    split: str | None  # the dataset split they come from; None: every row (the dataset is not split)
    of: int = Field(ge=0)  # rows in that split when planned (checked when the rows are read back)
    rows: int = Field(ge=0)  # rows picked
    picked: str | None = None  # base64 bitmap over the split's rows (bit i: row i); None: all of them

    @classmethod
    def of_indices(cls, split: str | None, of: int, indices: Sequence[int]) -> "RowPick":
        if len(indices) == of:
            return cls(split=split, of=of, rows=of)
        bits = bytearray((of + 7) // 8)
        for i in indices:
            bits[i // 8] |= 1 << (i % 8)
        return cls(split=split, of=of, rows=len(indices), picked=base64.b64encode(bytes(bits)).decode())

    def indices(self) -> list[int]:
        if self.picked is None:
            return list(range(self.of))
        bits = base64.b64decode(self.picked)
        return [i for i in range(self.of) if bits[i // 8] >> (i % 8) & 1]

    def select(self, source: Sequence[Row], where: str) -> list[Row]:
        if len(source) != self.of:
            raise Conflict(f"{where}: the plan counted {self.of} rows in split {self.split or '(all)'}, the dataset "
                           f"has {len(source)}; plan the job again")
        return [source[i] for i in self.indices()]


class PlannedSplits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: RowPick
    validation: RowPick
    report: RowPick
    report_split: str  # "test" or "validation"
    held_out: bool  # validation rows were carved out of the training rows
    warnings: list[str] = Field(default_factory=list)


class PlannedModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref: str
    digest: str
    context_length: int | None = None


class PlannedDataset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref: str  # name@version
    digest: str


class PlanRecord(BaseModel):
    """Everything ``plan_training`` resolved, as JSON (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    base: PlannedModel
    dataset: PlannedDataset
    task: Task
    method: str
    config: TrainConfig
    output: str  # name, or name:tag when the user gave one
    labels: list[str]
    splits: PlannedSplits
    start_from: PlannedModel | None = None  # the adapter the new one starts from

    def with_hyperparameters(self, hp: Hyperparameters) -> "PlanRecord":
        """The same plan with other knobs (a tuning trial): the rows do not depend on the knobs a study may
        search (seed, fractions and row caps stay fixed for every trial), the settings are resolved again."""
        cfg = resolve(hp, self.task, self.method, self.base.context_length)
        cfg = fit_to_data(cfg, hp, self.task, self.splits.train.rows)
        return self.model_copy(update={"config": cfg})


class PlannedSpec(TrainSpec):
    """A ``train`` job's spec: what was asked (pinned) and, when it was planned before queueing, the plan."""

    plan: PlanRecord | None = None
