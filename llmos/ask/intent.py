"""Which operation a request means: the embedding model's nearest operation, sharpened by cue words.

Each operation's summary and example phrasings are embedded once per embedding model (by digest);
a request's score for an operation is its best cosine similarity with them, plus ``CUE_BONUS`` when
one of the operation's cue words occurs in it (embeddings of "load the model" and "unload the model"
are nearly the same; the verb is what tells them apart). Names the request mentions are replaced by
their kind first ("unload smollm2" -> "unload the model"), so the same wording scores the same
whatever the model is called.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Awaitable, Callable

import numpy as np

from llmos.ask.entities import Mention
from llmos.ask.ops import OPERATIONS, Operation

CUE_BONUS = 0.15
MIN_SCORE = 0.45  # below this nothing is close enough: ask what was meant
MIN_MARGIN = 0.03  # two operations closer than this: ask which one

EmbedFn = Callable[[list[str]], Awaitable[np.ndarray]]  # unit-length vectors


@dataclass(frozen=True)
class Scored:
    op: Operation
    score: float


def masked(text: str, mentions: list[Mention]) -> str:
    """``text`` with each mention replaced by "the <kind>"."""
    out, last = [], 0
    for m in mentions:
        out += [text[last:m.start], f"the {m.kind.value}"]
        last = m.end
    out.append(text[last:])
    return "".join(out)


def cue_hit(op: Operation, text: str) -> bool:
    low = text.lower()
    return any(re.search(rf"\b{cue}\b", low) for cue in op.cues)


class IntentIndex:
    """The operations' phrasings as vectors (one embedding model)."""

    def __init__(self, vectors: np.ndarray, owners: list[int]) -> None:
        self.vectors, self.owners = vectors, np.asarray(owners)

    @classmethod
    async def build(cls, embed: EmbedFn, ops: tuple[Operation, ...] = OPERATIONS) -> IntentIndex:
        texts, owners = [], []
        for i, op in enumerate(ops):
            for phrase in (op.summary, *op.examples):
                texts.append(phrase)
                owners.append(i)
        return cls(await embed(texts), owners)

    def rank(self, vector: np.ndarray, text: str, ops: tuple[Operation, ...] = OPERATIONS) -> list[Scored]:
        """Operations best first, each scored by its nearest phrasing plus its cue bonus."""
        sims = self.vectors @ vector
        best = np.full(len(ops), -1.0)
        np.maximum.at(best, self.owners, sims)
        scored = [Scored(op, float(best[i]) + (CUE_BONUS if cue_hit(op, text) else 0.0)) for i, op in enumerate(ops)]
        return sorted(scored, key=lambda s: -s.score)


def decide(ranked: list[Scored]) -> Operation | list[Operation]:
    """The operation meant, or the candidates to ask about (none close enough, or two too close)."""
    top = ranked[0]
    if top.score < MIN_SCORE:
        return []
    close = [s.op for s in ranked[1:3] if top.score - s.score < MIN_MARGIN]
    return [top.op, *close] if close else top.op
