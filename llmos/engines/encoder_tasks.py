"""Turning encoder outputs into task results: embeddings, class probabilities, entity spans."""

from __future__ import annotations

import torch

from llmos.engines.base import Span
from llmos.engines.spans import merge_spans, word_tags


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens, then L2-normalised (the sentence-transformers recipe)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled.float(), p=2, dim=-1)


def class_probs(logits: torch.Tensor, labels: list[str], *, multi_label: bool) -> list[dict[str, float]]:
    """Label -> probability per row; independent sigmoids when labels are not exclusive."""
    scores = logits.float()
    probs = torch.sigmoid(scores) if multi_label else torch.softmax(scores, dim=-1)
    names = labels or [f"LABEL_{i}" for i in range(probs.shape[-1])]
    return [dict(zip(names, row)) for row in probs.tolist()]


def tag_spans(texts: list[str], enc, logits: torch.Tensor, labels: list[str]) -> list[list[Span]]:
    """Entity spans per text of a tokenised batch (``enc`` must carry offsets and word ids)."""
    probs = torch.softmax(logits.float(), dim=-1)
    scores, label_ids = probs.max(dim=-1)
    names = labels or [f"LABEL_{i}" for i in range(probs.shape[-1])]
    offsets = enc["offset_mapping"].tolist()
    results = []
    for row in range(len(offsets)):
        words = word_tags(
            [tuple(o) for o in offsets[row]],
            enc.word_ids(row),
            [names[i] for i in label_ids[row].tolist()],
            scores[row].tolist(),
        )
        results.append(merge_spans(texts[row], words))
    return results
