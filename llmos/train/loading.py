"""Loading a stored model (full, or an adapter over its base) for evaluation or export, in-process.

``evaluate_stored`` is ``llmos eval MODEL DATASET``: the same report a training job writes, on any
stored model and any dataset split, without a daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmos.data.registry import Datasets
from llmos.data.rows import Row, Task
from llmos.errors import InvalidInput, WrongTask
from llmos.prompt_tasks import is_prompt_task
from llmos.store.manifest import ModelInfo
from llmos.store.registry import Registry
from llmos.train.config import Hyperparameters, resolve
from llmos.train.tasks import get_task, head_kwargs, quiet_load

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


def evaluate_stored(registry: Registry, datasets: Datasets, model_ref: str, dataset_ref: str,
                    split: str | None = None, hyperparameters: Hyperparameters | None = None) -> dict[str, Any]:
    """The evaluation report of a stored model on a dataset split (default: test, else validation, else all);
    the model's name is read in the dataset registry's tenant."""
    info = registry.get(model_ref, tenant=datasets.tenant)
    dataset = datasets.get(dataset_ref)
    task = model_task(info)
    if dataset.task != task:
        raise InvalidInput(f"model {info.ref} does {task.value}; dataset {dataset.ref} holds {dataset.task.value} "
                           "rows", param="dataset")
    split = split or next((s for s in ("test", "validation") if dataset.counts.splits.get(s)), None)
    rows: list[Row] = list(datasets.rows(dataset.name, dataset.version, split=split))
    if not rows:
        raise InvalidInput(f"dataset {dataset.ref} has no rows{f' in split {split!r}' if split else ''}")
    cfg = resolve(hyperparameters or Hyperparameters(), task, "full", info.manifest.context_length)
    if is_prompt_task(info):  # no weights of its own: score what its serving path answers
        from llmos.prompt_tasks.evaluate import evaluate_prompt_task

        report = evaluate_prompt_task(registry, info, _sample(rows, cfg.max_eval_rows))
        report.update(model=info.ref, dataset=dataset.ref, split=split or "all")
        return report
    loaded = load_trained(registry, info.key)
    report = get_task(task).report(loaded.model, loaded.tokenizer, _sample(rows, cfg.max_eval_rows), loaded.labels,
                                   cfg, loaded.chat_template)
    report.update(model=info.ref, dataset=dataset.ref, split=split or "all")
    return report


def _sample(rows: list[Row], limit: int | None) -> list[Row]:
    return rows if limit is None else rows[:limit]
