"""The task registry: what a fine-tuning task trains (which head), how rows become tensors, how it is scored.

Built-in tasks register like extensions do, one ``register_task`` call each: ``classify`` (a sequence
classification head over the base), ``tag`` (a token classification head; IOB2 tags on the first
sub-token of each word, -100 on the rest) and ``sft`` (``llmos.train.sft``: a causal LM learning the
answers, with prompts built by the model's own chat template).

Generators may be fine-tuned for classify and tag when transformers has such a head for their
architecture (SmolLM2 -> LlamaForSequenceClassification reads the last token): the result is then a
classifier, not a chat model. Encoders cannot be fine-tuned for sft: they have no causal LM head and
no chat template. Heavy imports (torch, transformers) happen inside methods, so the API can validate
a job without loading them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.data.rows import ClassifyRow, Row, TagRow, Task
from llmos.errors import InvalidInput, WrongTask
from llmos.registry import Registry

if TYPE_CHECKING:
    from llmos.store.manifest import ModelInfo
    from llmos.train.report import EvalReport
    from llmos.train.config import TrainConfig

IGNORE = -100  # the label id cross-entropy skips: padding, later sub-tokens, labels the model lacks
Metrics = Callable[[Any], dict[str, float]]


class TrainTask(ABC):
    """One kind of fine-tuning. Subclasses say which head to load, how to encode rows and how to score."""

    name: Task
    head: str  # the head kind the result loads with: "classify", "tag" or "causal"
    peft_task_type: str  # PEFT's TaskType for this head
    metric: str  # validation metric that picks the best checkpoint (Trainer's "eval_" prefix left off)
    greater_is_better: bool = True

    @property
    def serves(self) -> list[str]:
        """What a model fine-tuned for this task serves."""
        return {"classify": ["classify", "embed"], "tag": ["tag", "embed"], "causal": ["generate"]}[self.head]

    @abstractmethod
    def check_base(self, base: "ModelInfo") -> None:
        """Raise WrongTask when ``base`` cannot learn this task."""

    def label_set(self, rows: Sequence[Row]) -> list[str]:
        """The labels a model learns from these training rows (empty for sft)."""
        return []

    @abstractmethod
    def check_rows(self, train: Sequence[Row], labels: list[str], where: str) -> None:
        """Raise InvalidInput when the training rows cannot train anything (one class, no entity...)."""

    @abstractmethod
    def load_model(self, folder: Path, labels: list[str], tokenizer: Any) -> Any:
        """The base's weights with this task's head (new heads start random)."""

    @abstractmethod
    def encode(self, rows: Sequence[Row], tokenizer: Any, labels: list[str], cfg: "TrainConfig",
               chat_template: str | None) -> list[dict[str, Any]]:
        """Rows as model inputs with ``labels``; rows that leave nothing to learn are dropped."""

    @abstractmethod
    def collator(self, tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        """Pads a list of encoded rows into a batch."""

    def compute_metrics(self, labels: list[str]) -> Metrics | None:
        """Scores validation predictions (arg-maxed ids) for early stopping; None: loss only."""
        return None

    @abstractmethod
    def report(self, model: Any, tokenizer: Any, rows: Sequence[Row], labels: list[str], cfg: "TrainConfig",
               chat_template: str | None) -> "EvalReport":
        """The evaluation report of ``model`` on ``rows``."""


# -- the registry ---------------------------------------------------------------------------------
TASKS: Registry[TrainTask] = Registry("task", param="task")


def register_task(task: TrainTask, *, replace: bool = False) -> None:
    """Make ``task`` trainable under ``task.name``."""
    TASKS.register(task.name.value, task, replace=replace)


def get_task(name: Task | str) -> TrainTask:
    return TASKS.get(name.value if isinstance(name, Task) else str(name))


def task_names() -> list[str]:
    return TASKS.names()


# -- shared pieces --------------------------------------------------------------------------------
def check_head(base: "ModelInfo", task: str, mapping_name: str) -> None:
    """WrongTask unless transformers has a ``task`` head for the base's architecture."""
    from transformers.models.auto import modeling_auto

    mapping = getattr(modeling_auto, mapping_name)
    model_type = base.manifest.model_type
    if model_type not in mapping:
        raise WrongTask(f"model {base.ref} ({base.manifest.architecture}) cannot be fine-tuned to {task}: "
                        f"transformers has no {task} head for model type {model_type!r}", param="model")


def head_kwargs(labels: list[str], tokenizer: Any) -> dict[str, Any]:
    """from_pretrained arguments for a new head with ``labels``; a mismatched old head is replaced."""
    kwargs: dict[str, Any] = dict(num_labels=len(labels), id2label=dict(enumerate(labels)),
                                  label2id={label: i for i, label in enumerate(labels)},
                                  ignore_mismatched_sizes=True)
    if tokenizer.pad_token_id is not None:
        kwargs["pad_token_id"] = tokenizer.pad_token_id  # a decoder's classifier finds the last real token by it
    return kwargs


def quiet_load(cls: Any, folder: Path, **kwargs: Any) -> Any:
    """from_pretrained without the "newly initialised head" report: a new head is the point here."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return cls.from_pretrained(folder, local_files_only=True, trust_remote_code=False, **kwargs)
    finally:
        hf_logging.set_verbosity(level)


def label_ids(labels: list[str]) -> dict[str, int]:
    return {label: i for i, label in enumerate(labels)}


# -- classify -------------------------------------------------------------------------------------
class ClassifyTask(TrainTask):
    name = Task.classify
    head = "classify"
    peft_task_type = "SEQ_CLS"
    metric = "accuracy"

    def check_base(self, base: "ModelInfo") -> None:
        check_head(base, "classify", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES")

    def label_set(self, rows: Sequence[Row]) -> list[str]:
        from llmos.data.mapping import sort_labels

        return sort_labels({r.label for r in rows if isinstance(r, ClassifyRow)})

    def check_rows(self, train: Sequence[Row], labels: list[str], where: str) -> None:
        if len(labels) < 2:
            raise InvalidInput(f"{where} has a single class ({labels[0]!r}) in its training rows: a classifier "
                               "needs at least two labels to tell apart", param="dataset")

    def load_model(self, folder: Path, labels: list[str], tokenizer: Any) -> Any:
        from transformers import AutoModelForSequenceClassification

        return quiet_load(AutoModelForSequenceClassification, folder, **head_kwargs(labels, tokenizer))

    def encode(self, rows: Sequence[Row], tokenizer: Any, labels: list[str], cfg: "TrainConfig",
               chat_template: str | None) -> list[dict[str, Any]]:
        ids = label_ids(labels)
        texts = [r.text for r in rows]  # type: ignore[union-attr]
        enc = tokenizer(texts, truncation=True, max_length=cfg.max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        return [{**{k: enc[k][i] for k in keys}, "labels": ids.get(r.label, IGNORE)}  # type: ignore[union-attr]
                for i, r in enumerate(rows)]

    def collator(self, tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def compute_metrics(self, labels: list[str]) -> Metrics:
        def metrics(pred: Any) -> dict[str, float]:
            import numpy as np
            from sklearn.metrics import f1_score

            preds, gold = np.asarray(pred.predictions).reshape(-1), np.asarray(pred.label_ids).reshape(-1)
            return {"accuracy": float((preds == gold).mean()) if len(gold) else 0.0,
                    "macro_f1": float(f1_score(gold, preds, average="macro", zero_division=0))}

        return metrics

    def report(self, model: Any, tokenizer: Any, rows: Sequence[Row], labels: list[str], cfg: "TrainConfig",
               chat_template: str | None) -> "EvalReport":
        from llmos.train.evaluate import classify_report

        return classify_report(model, tokenizer, rows, labels, cfg.max_length, cfg.batch_size)


# -- tag ------------------------------------------------------------------------------------------
class TagTask(TrainTask):
    name = Task.tag
    head = "tag"
    peft_task_type = "TOKEN_CLS"
    metric = "f1"

    def check_base(self, base: "ModelInfo") -> None:
        check_head(base, "tag", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES")

    def label_set(self, rows: Sequence[Row]) -> list[str]:
        from llmos.data.mapping import sort_labels

        return sort_labels({t for r in rows if isinstance(r, TagRow) for t in r.tags})

    def check_rows(self, train: Sequence[Row], labels: list[str], where: str) -> None:
        if not [t for t in labels if t != "O"]:
            raise InvalidInput(f"{where} tags no entity in its training rows (every tag is 'O'): there is "
                               "nothing for a tagger to learn", param="dataset")

    def load_model(self, folder: Path, labels: list[str], tokenizer: Any) -> Any:
        from transformers import AutoModelForTokenClassification

        return quiet_load(AutoModelForTokenClassification, folder, **head_kwargs(labels, tokenizer))

    def encode(self, rows: Sequence[Row], tokenizer: Any, labels: list[str], cfg: "TrainConfig",
               chat_template: str | None) -> list[dict[str, Any]]:
        ids = label_ids(labels)
        words = [list(r.tokens) for r in rows]  # type: ignore[union-attr]
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=cfg.max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        out = []
        for i, row in enumerate(rows):
            tags = [ids.get(t, IGNORE) for t in row.tags]  # type: ignore[union-attr]
            out.append({**{k: enc[k][i] for k in keys}, "labels": align_word_labels(enc.word_ids(i), tags)})
        return out

    def collator(self, tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer)

    def compute_metrics(self, labels: list[str]) -> Metrics:
        def metrics(pred: Any) -> dict[str, float]:
            from seqeval.metrics import f1_score, precision_score, recall_score

            gold, guess = word_sequences(pred.predictions, pred.label_ids, labels)
            return {"f1": float(f1_score(gold, guess, zero_division=0)),
                    "precision": float(precision_score(gold, guess, zero_division=0)),
                    "recall": float(recall_score(gold, guess, zero_division=0))}

        return metrics

    def report(self, model: Any, tokenizer: Any, rows: Sequence[Row], labels: list[str], cfg: "TrainConfig",
               chat_template: str | None) -> "EvalReport":
        from llmos.train.evaluate import tag_report

        return tag_report(model, tokenizer, rows, labels, cfg.max_length, cfg.batch_size)


def align_word_labels(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """The first sub-token of each word carries the word's tag; other sub-tokens and specials get -100."""
    out, previous = [], None
    for word in word_ids:
        out.append(tags[word] if word is not None and word != previous else IGNORE)
        previous = word
    return out


def word_sequences(preds: Any, gold: Any, labels: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """Tag-name sequences of the labelled positions (first sub-tokens) of each row: (gold, predicted)."""
    import numpy as np

    preds, gold = np.asarray(preds), np.asarray(gold)
    gold_seqs, pred_seqs = [], []
    for p_row, g_row in zip(preds, gold):
        keep = g_row != IGNORE
        gold_seqs.append([labels[i] for i in g_row[keep]])
        pred_seqs.append([labels[i] if 0 <= i < len(labels) else "O" for i in p_row[keep]])
    return gold_seqs, pred_seqs


register_task(ClassifyTask())
register_task(TagTask())
