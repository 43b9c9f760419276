"""What a fine-tuning job is asked to do (``TrainSpec``) and the concrete settings it runs with.

``Hyperparameters`` is what a user may set; every field left ``None`` takes the default of the task
and method (``resolve``), so a plain ``llmos train minilm-l6 sst2`` gets settings that work:

=========  ======  =====  ==========  =====  ==============================================
task       epochs  batch  max_length  warm.  learning rate (full / lora / prompt, prefix)
=========  ======  =====  ==========  =====  ==============================================
classify   3       32     128         0.06   1e-4 / 1e-3 / 1e-2
tag        4       32     128         0.06   1e-4 / 2e-3 / 1e-2
sft        2       8      512         0.03   3e-5 / 2e-4 / (not offered)
=========  ======  =====  ==========  =====  ==============================================

MiniLM-L6 is small (22M parameters): it wants a higher learning rate than BERT-base's 2e-5..5e-5.
A small dataset gets more epochs when ``epochs`` is left unset (``stretch_epochs``): classification
and tagging train for at least 1,500 / 1,000 optimizer steps, up to 20 epochs (early stopping still
ends a run that stops improving; under 1,000 rows its default patience is half the run's
validations, ``patience_for``, so a handful of validation rows cannot stop it on noise). Many-label
sets need it: Banking77's 77 intents (8,000 rows, 250 steps an epoch) are far from learnt after the
3 epochs that suit SST-2's 67,000 rows.
``bench/quality.py`` measures what these defaults reach (figures in docs/benchmarks.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmos.data.rows import Task
from llmos.errors import InvalidInput


class Hyperparameters(BaseModel):
    """Knobs a user may turn; ``None`` means "the default for this task and method"."""

    model_config = ConfigDict(extra="forbid")

    epochs: float | None = Field(None, gt=0, le=100)
    learning_rate: float | None = Field(None, gt=0, lt=1)
    batch_size: int | None = Field(None, ge=1, le=1024)
    max_length: int | None = Field(None, ge=8, le=32768, description="tokens per training row (longer: cut)")
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0, lt=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    max_train_rows: int | None = Field(None, ge=1, description="train on a seeded sample of this many rows")
    max_eval_rows: int | None = Field(None, ge=1, description="validate and report on at most this many rows")
    eval_steps: int | None = Field(None, ge=1, description="validate every N steps (default: every epoch)")
    early_stopping_patience: int | None = Field(None, ge=0, description="validations without improvement; 0: never "
                                                "stop; default 2, or half the run's validations on a small dataset")
    checkpoint_steps: int = Field(200, ge=1, description="write a resumable checkpoint every N steps")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, description="held out when the data has no validation split")
    seed: int = Field(42, ge=0)
    lora_r: int = Field(16, ge=1, le=1024)
    lora_alpha: int | None = Field(None, ge=1, description="default: 2 x lora_r")
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] | None = Field(None, description="LoRA targets (default: every linear layer)")
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="prompt / prefix tuning length")
    report_rows: int = Field(100, ge=1, description="sft: rows whose answers are generated for the report")
    max_new_tokens: int = Field(128, ge=1, le=4096, description="sft: answer length cap in the report")

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or any(not t.strip() for t in v)):
            raise ValueError("name at least one module, none empty")
        return v


class TrialLink(BaseModel):
    """Marks a ``train`` job as one trial of a tuning job: its result stays in the job's work folder
    (``work/result``) for the tuning job to compare and promote, instead of being registered."""

    model_config = ConfigDict(extra="forbid")

    of: str = Field(min_length=1, description="the tuning job's id")
    number: int = Field(ge=0, description="the trial's number in the study")


class TrainSpec(BaseModel):
    """A fine-tuning job's spec, as stored with the job (JSON) and checked before it is queued."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field(min_length=1, description="model to start from: name or name:tag")
    dataset: str = Field(min_length=1, description="dataset: name or name@version")
    task: Task | None = None  # default: the dataset's task
    method: str | None = None  # default: full for classify/tag, lora for sft
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    name: str | None = None  # result name[:tag]; default: <base>-<dataset>
    start_from: str | None = Field(None, min_length=1, description="a LoRA adapter over `base` whose weights the new "
                                   "adapter starts from (methods lora and dpo; dpo also takes it as its reference)")
    tenant: str = "default"
    publish: bool = False  # the caller is an admin: a public name takes its results (the API sets this)
    trial: TrialLink | None = None  # set by a tuning job for its trials

    @classmethod
    def parse(cls, data: dict[str, Any]) -> "TrainSpec":
        """Validate user input; a bad value is InvalidInput naming the field (``hyperparameters.lr``)."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "spec"
            got = f" (got {first['input']!r})" if "input" in first and first["type"] != "missing" else ""
            hint = ""
            if first["type"] == "extra_forbidden" and where.startswith("hyperparameters."):
                hint = f"; known hyperparameters: {', '.join(Hyperparameters.model_fields)}"
            raise InvalidInput(f"{where}: {first['msg']}{got}{hint}", param=where) from None


@dataclass(frozen=True)
class TaskDefaults:
    epochs: float
    batch_size: int
    max_length: int
    warmup_ratio: float
    learning_rates: dict[str, float]  # method name -> default learning rate
    min_steps: int = 0  # default epochs grow until training takes this many optimizer steps


DEFAULTS: dict[Task, TaskDefaults] = {
    Task.classify: TaskDefaults(3, 32, 128, 0.06, {"full": 1e-4, "lora": 1e-3, "prompt": 1e-2, "prefix": 1e-2},
                                min_steps=1500),
    Task.tag: TaskDefaults(4, 32, 128, 0.06, {"full": 1e-4, "lora": 2e-3, "prompt": 1e-2, "prefix": 1e-2},
                           min_steps=1000),
    Task.sft: TaskDefaults(2, 8, 512, 0.03, {"full": 3e-5, "lora": 2e-4, "dpo": 1e-4}),
}
DEFAULT_LR = 1e-4
MAX_STRETCHED_EPOCHS = 20
DEFAULT_PATIENCE = 2
SMALL_DATA_ROWS = 1000  # below this many training rows a validation score moves on noise


@dataclass(frozen=True)
class TrainConfig:
    """Every setting concrete: what the training loop runs with and what lineage records."""

    epochs: float
    learning_rate: float
    batch_size: int
    max_length: int
    warmup_ratio: float
    weight_decay: float
    max_steps: int | None
    max_train_rows: int | None
    max_eval_rows: int | None
    eval_steps: int | None
    early_stopping_patience: int
    checkpoint_steps: int
    validation_fraction: float
    seed: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: list[str] | None
    num_virtual_tokens: int
    report_rows: int
    max_new_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def resolve(hp: Hyperparameters, task: Task, method: str, context_length: int | None = None) -> TrainConfig:
    """Fill every unset hyperparameter with the default for ``task`` and ``method``."""
    d = DEFAULTS[task]
    max_length = hp.max_length or d.max_length
    if context_length:
        max_length = min(max_length, context_length)
    values = hp.model_dump()
    values.update(
        epochs=hp.epochs or d.epochs,
        learning_rate=hp.learning_rate or d.learning_rates.get(method, DEFAULT_LR),
        batch_size=hp.batch_size or d.batch_size,
        max_length=max_length,
        warmup_ratio=d.warmup_ratio if hp.warmup_ratio is None else hp.warmup_ratio,
        lora_alpha=hp.lora_alpha or 2 * hp.lora_r,
        early_stopping_patience=DEFAULT_PATIENCE if hp.early_stopping_patience is None else hp.early_stopping_patience,
    )
    return TrainConfig(**values)


def stretch_epochs(cfg: TrainConfig, hp: Hyperparameters, task: Task, train_rows: int) -> TrainConfig:
    """Raise the default epochs of a small dataset so training takes the task's ``min_steps``
    (at most ``MAX_STRETCHED_EPOCHS``); epochs or max_steps a user set are kept as they are."""
    min_steps = DEFAULTS[task].min_steps
    if hp.epochs is not None or hp.max_steps is not None or min_steps <= 0 or train_rows <= 0:
        return cfg
    per_epoch = math.ceil(train_rows / cfg.batch_size)
    epochs = min(MAX_STRETCHED_EPOCHS, max(cfg.epochs, math.ceil(min_steps / per_epoch)))
    return replace(cfg, epochs=epochs) if epochs != cfg.epochs else cfg


def patience_for(cfg: TrainConfig, hp: Hyperparameters, train_rows: int) -> TrainConfig:
    """On a small dataset (under ``SMALL_DATA_ROWS`` rows) the default patience waits half the run's
    validations: its validation split is a handful of rows whose score moves with one answer, and two
    unlucky validations must not end a run at a fifth of its steps. A patience a user set is kept."""
    if hp.early_stopping_patience is not None or train_rows <= 0 or train_rows >= SMALL_DATA_ROWS:
        return cfg
    per_epoch = math.ceil(train_rows / cfg.batch_size)
    steps = cfg.max_steps or math.ceil(per_epoch * cfg.epochs)
    validations = math.ceil(steps / (cfg.eval_steps or per_epoch))
    return replace(cfg, early_stopping_patience=max(DEFAULT_PATIENCE, math.ceil(validations / 2)))


def fit_to_data(cfg: TrainConfig, hp: Hyperparameters, task: Task, train_rows: int) -> TrainConfig:
    """The defaults a dataset of ``train_rows`` rows gets: more epochs when small (``stretch_epochs``)
    and a patience that does not stop on noise (``patience_for``)."""
    return patience_for(stretch_epochs(cfg, hp, task, train_rows), hp, train_rows)
