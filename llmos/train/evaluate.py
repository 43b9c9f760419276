"""Evaluation reports: what a fine-tuned model gets right, per class, per entity type, per answer.

* classify: accuracy, macro F1, per-class precision / recall / F1 / support (scikit-learn) and the
  confusion matrix. Gold labels the model never learned are listed under ``unseen_labels`` and count
  as errors (their recall is 0): a report never crashes on them.
* tag: entity-level precision / recall / F1 overall and per entity type (seqeval, CoNLL style), token
  accuracy; gold tags the model lacks are listed under ``unseen_tags``.
* sft: teacher-forced loss (and perplexity) on the answers, then greedy answers to the prompts, built
  with the model's chat template, scored by exact match and token F1 against the references.

Every report has ``metrics``: its headline numbers, which lineage records. ``loss_curve`` draws the
training (and validation) loss of a run as a PNG.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from llmos.data.rows import ClassifyRow, Row, TagRow
from llmos.train.report import ClassScores, ConfusionMatrix, EvalReport

REPORT_SAMPLES = 5  # generated answers kept in an sft report, for a person to read


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _inputs(enc: Any, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


# -- classify -------------------------------------------------------------------------------------
@torch.inference_mode()
def predict_classes(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int) -> list[int]:
    model.eval()
    out: list[int] = []
    for chunk in batches(texts, batch_size):
        enc = tokenizer(list(chunk), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        out.extend(model(**_inputs(enc, model_device(model))).logits.argmax(dim=-1).tolist())
    return out


def classify_report(model: Any, tokenizer: Any, rows: Sequence[Row], labels: list[str], max_length: int,
                    batch_size: int) -> EvalReport:
    gold = [r.label for r in rows if isinstance(r, ClassifyRow)]
    texts = [r.text for r in rows if isinstance(r, ClassifyRow)]
    guess = [labels[i] for i in predict_classes(model, tokenizer, texts, max_length, batch_size)]
    return score_classes(gold, guess, labels)


def score_classes(gold: Sequence[str], guess: Sequence[str], labels: list[str]) -> EvalReport:
    """The classify report for predictions made by any means (a fine-tuned head, a prompt task)."""
    from sklearn.metrics import classification_report, confusion_matrix

    unseen = Counter(g for g in gold if g not in set(labels))
    names = list(labels) + sorted(unseen)
    report = classification_report(gold, guess, labels=names, output_dict=True, zero_division=0)
    per_class = {n: _prf(report[n]) for n in names}
    accuracy = sum(g == p for g, p in zip(gold, guess)) / max(1, len(gold))
    macro_f1 = sum(c.f1 for c in per_class.values()) / max(1, len(per_class))
    matrix = ConfusionMatrix(labels=names, matrix=confusion_matrix(gold, guess, labels=names).tolist())
    return EvalReport(task="classify", rows=len(gold), metrics={"accuracy": accuracy, "macro_f1": macro_f1},
                      per_class=per_class, unseen_labels=dict(unseen), confusion_matrix=matrix,
                      per_row=[float(g == p) for g, p in zip(gold, guess)])


def _prf(entry: dict[str, float]) -> ClassScores:
    return ClassScores(precision=float(entry["precision"]), recall=float(entry["recall"]),
                       f1=float(entry["f1-score"]), support=int(entry["support"]))


# -- tag ------------------------------------------------------------------------------------------
@torch.inference_mode()
def predict_tags(model: Any, tokenizer: Any, sentences: Sequence[list[str]], labels: list[str], max_length: int,
                 batch_size: int) -> list[list[str]]:
    """One tag per word: the prediction at the word's first sub-token ("O" for words cut by truncation)."""
    model.eval()
    out: list[list[str]] = []
    for chunk in batches(sentences, batch_size):
        enc = tokenizer([list(s) for s in chunk], is_split_into_words=True, truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")
        ids = model(**_inputs(enc, model_device(model))).logits.argmax(dim=-1).tolist()
        for row, words in enumerate(chunk):
            tags = ["O"] * len(words)
            seen: set[int] = set()
            for pos, word in enumerate(enc.word_ids(row)):
                if word is not None and word not in seen:
                    seen.add(word)
                    tags[word] = labels[ids[row][pos]]
            out.append(tags)
    return out


def tag_report(model: Any, tokenizer: Any, rows: Sequence[Row], labels: list[str], max_length: int,
               batch_size: int) -> EvalReport:
    tagged = [r for r in rows if isinstance(r, TagRow)]
    gold = [list(r.tags) for r in tagged]
    guess = predict_tags(model, tokenizer, [r.tokens for r in tagged], labels, max_length, batch_size)
    return score_tags(gold, guess, labels)


def score_tags(gold: list[list[str]], guess: list[list[str]], labels: list[str]) -> EvalReport:
    """The tag report for IOB2 predictions made by any means (a fine-tuned head, a prompt task)."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    unseen = Counter(t for tags in gold for t in tags if t not in set(labels))
    tokens = sum(len(t) for t in gold)
    token_acc = sum(g == p for gs, ps in zip(gold, guess) for g, p in zip(gs, ps)) / max(1, tokens)
    per_type = classification_report(gold, guess, output_dict=True, zero_division=0)
    entities = {k: _prf(v) for k, v in per_type.items() if not k.endswith(" avg")}
    metrics = {"f1": float(f1_score(gold, guess, zero_division=0)),
               "precision": float(precision_score(gold, guess, zero_division=0)),
               "recall": float(recall_score(gold, guess, zero_division=0)), "token_accuracy": token_acc}
    return EvalReport(task="tag", rows=len(gold), tokens=tokens, metrics=metrics, per_entity=entities,
                      unseen_tags=dict(unseen), per_row=[_row_f1(g, p) for g, p in zip(gold, guess)])


def _row_f1(gold: list[str], guess: list[str]) -> float:
    """One sentence's entity F1 (1.0 when neither side has an entity: nothing was missed or invented)."""
    from seqeval.metrics import f1_score

    if all(t == "O" for t in gold) and all(t == "O" for t in guess):
        return 1.0
    return float(f1_score([gold], [guess], zero_division=0))


@torch.inference_mode()
def generate(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers, left-padded batches."""
    model.eval()
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[str] = []
    try:
        for chunk in batches(prompts, batch_size):
            enc = tokenizer(list(chunk), add_special_tokens=False, padding=True, return_tensors="pt")
            enc = {k: v.to(model_device(model)) for k, v in enc.items()}
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
            out.extend(tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return [o.strip() for o in out]


def normalise_answer(text: str) -> str:
    return " ".join(text.lower().split())


def token_f1(guess: str, ref: str) -> float:
    """SQuAD-style overlap of lower-cased word and punctuation tokens."""
    g, r = re.findall(r"\w+|[^\w\s]", guess.lower()), re.findall(r"\w+|[^\w\s]", ref.lower())
    common = sum((Counter(g) & Counter(r)).values())
    if not g or not r or not common:
        return float(g == r)
    precision, recall = common / len(g), common / len(r)
    return 2 * precision * recall / (precision + recall)


# -- the loss curve -------------------------------------------------------------------------------
def loss_curve(log_history: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Training loss per step (and validation loss per evaluation) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if train:
            ax.plot(*zip(*train), label="training loss", linewidth=1)
        if evals:
            ax.plot(*zip(*evals), "o-", label="validation loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
