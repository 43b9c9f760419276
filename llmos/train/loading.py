"""Loading a stored model (full, or an adapter over its base) for evaluation or export, in-process.

``evaluate_stored`` is ``llmos eval MODEL DATASET``: the same report a training job writes, on any
stored model and any dataset split, without a daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmos.data.info import DatasetInfo
from llmos.data.registry import Datasets
from llmos.data.rows import Row, Task
from llmos.errors import InvalidInput, WrongTask
from llmos.store.manifest import ModelInfo, is_prompt_task
from llmos.store.registry import Registry
from llmos.train.config import Hyperparameters, resolve
from llmos.train.report import EvalReport
from llmos.train.task_kinds import get_task, head_kwargs, quiet_load

# A stored model's serving task -> the dataset task it is evaluated on
SERVED_TO_TASK = {"classify": Task.classify, "tag": Task.tag, "generate": Task.sft}


@dataclass
class Loaded:
    info: ModelInfo
    model: Any
    tokenizer: Any
    task: Task
    labels: list[str]
    chat_template: str | None


def model_task(info: ModelInfo) -> Task:
    """The dataset task a stored model is evaluated on (its first trainable serving task)."""
    for served in info.manifest.tasks:
        if served in SERVED_TO_TASK:
            return SERVED_TO_TASK[served]
    raise WrongTask(f"model {info.ref} serves {', '.join(info.manifest.tasks)}: nothing to evaluate against a "
                    "dataset (fine-tune it for classify, tag or sft first)", param="model")


def load_trained(registry: Registry, key: str) -> Loaded:
    """A stored model (by ``ModelInfo.key``) ready to predict: full weights, or its base with the adapter."""
    from transformers import AutoTokenizer

    info = registry.get_key(key)
    task = model_task(info)
    base = registry.parent(info) if info.manifest.kind == "adapter" else info
    base_dir = registry.snapshot(base)
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    labels = list(info.manifest.labels)
    if info.manifest.kind == "adapter":
        from peft import PeftModel

        head = _head_model(task, base_dir, labels, tokenizer)
        model = PeftModel.from_pretrained(head, str(registry.snapshot(info)), is_trainable=False)
    else:
        model = _head_model(task, base_dir, [], tokenizer)
        labels = labels or [model.config.id2label[i] for i in sorted(model.config.id2label)]
    return Loaded(info, model.eval(), tokenizer, task, labels, info.manifest.chat_template)


def _head_model(task: Task, folder: Any, labels: list[str], tokenizer: Any) -> Any:
    import transformers

    cls = {Task.classify: transformers.AutoModelForSequenceClassification,
           Task.tag: transformers.AutoModelForTokenClassification, Task.sft: transformers.AutoModelForCausalLM}[task]
    kwargs = head_kwargs(labels, tokenizer) if labels and task != Task.sft else {}
    return quiet_load(cls, folder, **kwargs)


@dataclass
class EvalInputs:
    """What ``llmos eval MODEL DATASET`` scores: the model, the rows of the chosen split, the settings."""

    info: ModelInfo
    dataset_ref: str
    split: str
    rows: list[Row]
    config: Any  # TrainConfig

    def finish(self, report: EvalReport) -> EvalReport:
        return report.model_copy(update={"model": self.info.ref, "dataset": self.dataset_ref, "split": self.split})


def eval_target(registry: Registry, datasets: Datasets, model_ref: str, dataset_ref: str,
                split: str | None = None) -> tuple[ModelInfo, DatasetInfo, str | None]:
    """Check the model against the dataset and pick the split (default: test, else validation, else all);
    the dataset's recorded counts say whether the split has rows, so nothing is read. The model's name
    is read in the dataset registry's tenant."""
    info = registry.get(model_ref, tenant=datasets.tenant)
    dataset = datasets.get(dataset_ref)
    task = model_task(info)
    if dataset.task != task:
        raise InvalidInput(f"model {info.ref} does {task.value}; dataset {dataset.ref} holds {dataset.task.value} "
                           "rows", param="dataset")
    split = split or next((s for s in ("test", "validation") if dataset.counts.splits.get(s)), None)
    if not (dataset.counts.splits.get(split, 0) if split else dataset.counts.rows):
        raise InvalidInput(f"dataset {dataset.ref} has no rows{f' in split {split!r}' if split else ''}")
    return info, dataset, split


def eval_inputs(registry: Registry, datasets: Datasets, model_ref: str, dataset_ref: str,
                split: str | None = None, hyperparameters: Hyperparameters | None = None) -> EvalInputs:
    """``eval_target``'s model and split, with the split's rows (at most ``max_eval_rows``)."""
    info, dataset, split = eval_target(registry, datasets, model_ref, dataset_ref, split)
    rows: list[Row] = list(datasets.rows(dataset.name, dataset.version, split=split))
    cfg = resolve(hyperparameters or Hyperparameters(), model_task(info), "full", info.manifest.context_length)
    return EvalInputs(info, dataset.ref, split or "all", _sample(rows, cfg.max_eval_rows), cfg)


def evaluate_stored(registry: Registry, datasets: Datasets, model_ref: str, dataset_ref: str,
                    split: str | None = None, hyperparameters: Hyperparameters | None = None) -> EvalReport:
    """The evaluation report of a stored model with weights of its own (a prompt task is scored through
    its serving path: ``llmos.prompt_tasks.evaluate.evaluate_stored_task``)."""
    inputs = eval_inputs(registry, datasets, model_ref, dataset_ref, split, hyperparameters)
    if is_prompt_task(inputs.info):
        raise WrongTask(f"{inputs.info.ref} is a prompt task: it is evaluated through its serving path")
    loaded = load_trained(registry, inputs.info.key)
    report = get_task(loaded.task).report(loaded.model, loaded.tokenizer, inputs.rows, loaded.labels, inputs.config,
                                          loaded.chat_template)
    return inputs.finish(report)


def _sample(rows: list[Row], limit: int | None) -> list[Row]:
    return rows if limit is None else rows[:limit]
