"""``llmos eval`` on a prompt task: the same report a fine-tuned model gets, from the serving path.

Predictions come from an in-process kernel running exactly what /v1/classify and /v1/tag run, so the
numbers describe what users are served. Extraction spans are turned into IOB2 tags over the row's
tokens (joined by spaces), so they are scored entity by entity like a tagger's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llmos.config import Settings, load_settings
from llmos.data.rows import ClassifyRow, Row, TagRow
from llmos.engines.base import Span
from llmos.kernel.core import Kernel
from llmos.prompt_tasks import serve
from llmos.prompt_tasks.store import spec_of
from llmos.data.registry import Datasets
from llmos.store.manifest import ModelInfo, is_prompt_task
from llmos.train.config import Hyperparameters
from llmos.train.loading import eval_inputs, evaluate_stored
from llmos.train.report import EvalReport
from llmos.store.registry import Registry

_CHUNK = 64  # texts per call: bounded memory, and progress the kernel can interleave with others


def evaluate_prompt_task(registry: Registry, info: ModelInfo, rows: Sequence[Row],
                         settings: Settings | None = None, kernel: Kernel | None = None) -> EvalReport:
    """The report of prompt task ``info`` on ``rows``, served by ``kernel`` (default: a kernel of its own,
    closed at the end; a caller scoring several splits or tasks passes one and keeps its loaded base)."""
    own = kernel is None
    kernel = kernel or Kernel(settings or load_settings(), registry)
    try:
        return _score(kernel, info, rows)
    finally:
        if own:
            kernel.close()


def _score(kernel: Kernel, info: ModelInfo, rows: Sequence[Row]) -> EvalReport:
    from llmos.train.evaluate import score_classes, score_tags

    task = info.manifest.tasks[0]
    if task == "classify":
        gold_rows = [r for r in rows if isinstance(r, ClassifyRow)]
        probs = asyncio.run(_predict(kernel, info, task, [r.text for r in gold_rows]))
        guess = [max(p, key=p.__getitem__) for p in probs]
        return score_classes([r.label for r in gold_rows], guess, list(info.manifest.labels))
    tagged = [r for r in rows if isinstance(r, TagRow)]
    spans = asyncio.run(_predict(kernel, info, task, [" ".join(r.tokens) for r in tagged]))
    guess = [iob_tags(r.tokens, s) for r, s in zip(tagged, spans)]
    labels = [f"{p}-{t}" for t in spec_of(info).labels for p in ("B", "I")] + ["O"]
    return score_tags([list(r.tags) for r in tagged], guess, labels)


async def _predict(kernel: Kernel, info: ModelInfo, task: str, texts: list[str]) -> list[Any]:
    resolved = kernel.resolve(info.ref, task, tenant=info.tenant)
    out: list[Any] = []
    for start in range(0, len(texts), _CHUNK):
        out.extend(await serve.run(task, kernel, resolved, texts[start:start + _CHUNK]))
    return out


def iob_tags(tokens: list[str], spans: list[Span]) -> list[str]:
    """IOB2 tags for ``tokens`` (as joined by single spaces) from character spans over that text."""
    tags, pos = [], 0
    for token in tokens:
        start, end = pos, pos + len(token)
        pos = end + 1
        span = next((s for s in spans if s.start < end and start < s.end), None)
        if span is None:
            tags.append("O")
        else:
            tags.append(("B-" if start <= span.start or not tags or tags[-1] == "O" else "I-") + span.label)
    return _fix_starts(tags)


def _fix_starts(tags: list[str]) -> list[str]:
    """An I- tag right after a different type starts a new entity (B-)."""
    fixed = []
    for tag in tags:
        if tag.startswith("I-") and (not fixed or fixed[-1][2:] != tag[2:]):
            tag = "B-" + tag[2:]
        fixed.append(tag)
    return fixed


def evaluate_stored_task(registry: Registry, datasets: Datasets, model_ref: str, dataset_ref: str,
                         split: str | None = None, hyperparameters: Hyperparameters | None = None) -> EvalReport:
    """``llmos eval`` on any stored model: a prompt task through its serving path, others as trained."""
    if not is_prompt_task(registry.get(model_ref, tenant=datasets.tenant)):
        return evaluate_stored(registry, datasets, model_ref, dataset_ref, split, hyperparameters)
    inputs = eval_inputs(registry, datasets, model_ref, dataset_ref, split, hyperparameters)
    return inputs.finish(evaluate_prompt_task(registry, inputs.info, inputs.rows))
