"""Fine-tuning jobs made from uploaded files: OpenAI's fine-tuning request on llmos's ``train`` job.

A request names a base model and a training file (and optionally a validation file). The files are
imported as one dataset of the caller's tenant (named after the file ids, so a file is imported once
and reused): a chat ``messages`` JSONL becomes chat SFT rows, a text / label JSONL classification
rows, a tokens / tags JSONL NER rows. Every line is mapped before anything is registered, and the
first bad line is a 400 naming the file and the line. The request is then planned like any
fine-tune (``plan_training``: every other mistake is a 4xx too, before a job exists) and queued as a
``train`` job. Its OpenAI fields (files, suffix, seed, metadata, the hyperparameters as sent) are a
``fine_tuning_jobs`` row beside the job.

The result is OpenAI's ``ft:<base>:<suffix>:<8 hex>`` (the suffix may be empty), stored under the
plain llmos name it stands for, ``ft-<base>[-<suffix>]-<8 hex>`` (one version, v1, and ``latest``;
``llmos.store.names`` reads one as the other), so the ``fine_tuned_model`` a client reads back is the
``model`` of its next chat.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from llmos.data.info import DatasetInfo, DatasetPreview
from llmos.data.registry import Datasets, ImportOptions
from llmos.data.rows import Task
from llmos.db.engine import Database
from llmos.db.tables import FineTuneRequest
from llmos.errors import InvalidInput, LlmosError, NotFound
from llmos.jobs import JobRunner
from llmos.store.files import FileInfo, Files
from llmos.store.names import parse_ref
from llmos.train.config import DEFAULT_LR, DEFAULTS, TrainSpec
from llmos.train.methods import DEFAULT_METHOD
from llmos.train.plan import TrainEnv, TrainPlan, plan_training

JOB_KIND = "train"
AUTO = "auto"


@dataclass
class FineTuneOrder:
    """A checked fine-tuning request (the API parses OpenAI's JSON into this)."""

    model: str
    training_file: str
    validation_file: str | None = None
    n_epochs: float | None = None
    batch_size: int | None = None
    learning_rate_multiplier: float | None = None
    seed: int | None = None
    suffix: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    extra_hyperparameters: dict[str, Any] = field(default_factory=dict)  # llmos's own knobs (max_steps, lora_r...)
    request: dict[str, Any] = field(default_factory=dict)  # the request as sent, kept with the job


@dataclass
class FineTuneRecord:
    """A fine-tuning job's OpenAI fields, as stored beside its ``train`` job."""

    job_id: str
    tenant: str
    model: str
    training_file: str
    validation_file: str | None
    result_name: str
    request: dict[str, Any]

    @property
    def seed(self) -> int | None:
        return self.request.get("seed")

    @property
    def metadata(self) -> dict[str, str] | None:
        return self.request.get("metadata")


class FineTunes:
    """Fine-tuning jobs of one tenant: create (import, plan, queue), read, list."""

    def __init__(self, env: TrainEnv, files: Files, jobs: JobRunner, db: Database, *, admin: bool = False) -> None:
        self.env = env
        self.files = files
        self.jobs = jobs
        self.db = db
        self.admin = admin

    @property
    def tenant(self) -> str:
        return self.env.datasets.tenant

    def create(self, order: FineTuneOrder) -> tuple[FineTuneRecord, TrainPlan]:
        """Import the files, plan and queue the ``train`` job; nothing is queued if any step fails."""
        training = self._file(order.training_file, "training_file")
        validation = self._file(order.validation_file, "validation_file") if order.validation_file else None
        dataset = dataset_of(self.env.datasets, self.files, training, validation)
        name = result_name(order.model, order.suffix)
        spec = TrainSpec.parse({"base": order.model, "dataset": dataset.ref, "name": parse_ref(name).name,
                                "tenant": self.tenant,
                                "publish": self.admin, "hyperparameters": hyperparameters(order, dataset)})
        plan = plan_training(self.env, spec)
        job_id = self.jobs.submit(JOB_KIND, plan.job_spec(), tenant=self.tenant)
        record = FineTuneRecord(job_id, self.tenant, order.model, training.id, validation.id if validation else None,
                                name, order.request)
        try:
            with self.db.session() as s:
                s.add(FineTuneRequest(job_id=job_id, tenant=self.tenant, model=record.model,
                                      training_file=record.training_file, validation_file=record.validation_file,
                                      result_name=name, request=record.request))
        except BaseException:
            self.jobs.cancel(job_id, self.tenant)  # a job no fine-tuning route can find must not run
            raise
        return record, plan

    def get(self, job_id: str) -> FineTuneRecord:
        with self.db.session() as s:
            row = s.get(FineTuneRequest, job_id)
            if row is None or row.tenant != self.tenant:
                raise NotFound(f"no fine-tuning job {job_id!r}", param="fine_tuning_job_id")
            return _record(row)

    def list(self, *, after: str | None = None, limit: int = 20) -> tuple[list[FineTuneRecord], bool]:
        """Newest first; ``after`` is the job id the previous page ended with. Returns (page, has_more)."""
        q = select(FineTuneRequest).where(FineTuneRequest.tenant == self.tenant)
        if after is not None:
            with self.db.session() as s:
                mark = s.get(FineTuneRequest, after)
                if mark is None or mark.tenant != self.tenant:
                    raise NotFound(f"no fine-tuning job {after!r}", param="after")
                when, mark_id = mark.created_at, mark.job_id
            q = q.where((FineTuneRequest.created_at < when)
                        | ((FineTuneRequest.created_at == when) & (FineTuneRequest.job_id < mark_id)))
        q = q.order_by(FineTuneRequest.created_at.desc(), FineTuneRequest.job_id.desc()).limit(limit + 1)
        with self.db.session() as s:
            found = [_record(r) for r in s.scalars(q)]
        return found[:limit], len(found) > limit

    def _file(self, file_id: str, param: str) -> FileInfo:
        try:
            info = self.files.get(file_id)
        except NotFound:
            raise NotFound(f"no file {file_id!r} ({param}); upload it with POST /v1/files", param=param) from None
        if info.purpose != "fine-tune":
            raise InvalidInput(f"file {file_id} was uploaded for {info.purpose!r}; a {param} must have purpose "
                               "'fine-tune'", param=param)
        return info


def dataset_of(datasets: Datasets, files: Files, training: FileInfo, validation: FileInfo | None) -> DatasetInfo:
    """The dataset holding the files' rows (imported now, or earlier from the same files)."""
    name = training.id if validation is None else f"{training.id}-{validation.id.removeprefix('file-')}"
    try:
        found = datasets.get(name)
        if validation is None or "validation" in found.counts.splits:
            return found
    except NotFound:
        pass
    jsonl = ImportOptions(format="jsonl")
    if validation is None:
        return _import(datasets, files, training, name, jsonl, "training_file")
    checked = _preview(datasets, files, validation, jsonl, "validation_file")  # whole, before anything is stored
    first = _preview(datasets, files, training, jsonl, "training_file")
    if checked.task is not first.task:
        raise InvalidInput(f"the validation file holds {checked.task.value} rows but the training file "
                           f"{first.task.value} rows; both must hold the same kind", param="validation_file")
    _import(datasets, files, training, name, jsonl.model_copy(update={"split": "train", "task": first.task}),
            "training_file")
    return _import(datasets, files, validation, name,
                   jsonl.model_copy(update={"split": "validation", "append": True, "task": first.task}),
                   "validation_file")


def _preview(datasets: Datasets, files: Files, info: FileInfo, opts: ImportOptions, param: str) -> DatasetPreview:
    try:
        return datasets.preview_file(files.path(info.id), opts, file_name=info.filename)
    except LlmosError as exc:
        exc.details.setdefault("param", param)
        raise


def _import(datasets: Datasets, files: Files, info: FileInfo, name: str, opts: ImportOptions,
            param: str) -> DatasetInfo:
    try:
        return datasets.import_file(files.path(info.id), name, opts, file_name=info.filename)
    except LlmosError as exc:
        exc.details.setdefault("param", param)
        raise


def result_name(model: str, suffix: str | None) -> str:
    """OpenAI's ``ft:<base name>:<suffix>:<8 hex>``, new for every job (stored as ``ft-...``, see above)."""
    return ":".join(["ft", parse_ref(model).name, suffix or "", secrets.token_hex(4)])


def hyperparameters(order: FineTuneOrder, dataset: DatasetInfo) -> dict[str, Any]:
    """OpenAI's knobs as llmos hyperparameters, beside llmos's own; the same knob twice is a 400."""
    mapped: dict[str, Any] = {}
    if order.n_epochs is not None:
        mapped["epochs"] = order.n_epochs
    if order.batch_size is not None:
        mapped["batch_size"] = order.batch_size
    if order.learning_rate_multiplier is not None:
        mapped["learning_rate"] = order.learning_rate_multiplier * default_learning_rate(dataset.task)
    if order.seed is not None:
        mapped["seed"] = order.seed
    both = sorted(set(mapped) & set(order.extra_hyperparameters))
    if both:
        raise InvalidInput(f"hyperparameters.{both[0]} is set twice (by an OpenAI field and by its llmos name); "
                           "give it once", param=f"hyperparameters.{both[0]}")
    return {**order.extra_hyperparameters, **mapped}


def default_learning_rate(task: Task | str) -> float:
    """What ``learning_rate_multiplier`` multiplies: the default rate of the dataset's task and its default
    method (LoRA for chat SFT, full for classification and NER)."""
    task = Task(task)
    return DEFAULTS[task].learning_rates.get(DEFAULT_METHOD[task], DEFAULT_LR)


def _record(row: FineTuneRequest) -> FineTuneRecord:
    return FineTuneRecord(row.job_id, row.tenant, row.model, row.training_file, row.validation_file, row.result_name,
                          dict(row.request or {}))
