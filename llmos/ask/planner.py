"""A request in plain language -> a plan of route calls, a question back, or a refusal. Nothing runs here.

The request is cut into clauses ("unload X, then load Y"); for each, the embedding model picks the
operation (``llmos.ask.intent``), the words and the caller's names give its arguments
(``llmos.ask.fill``), and the chat model fills what is left under constrained decoding
(``llmos.ask.llm``). Any clause that is unclear makes the whole answer a question; any step the
caller's key may not call makes it a refusal: a plan is all or nothing.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from llmos.ask import llm
from llmos.ask.entities import Entities, Mention
from llmos.ask.fill import fill
from llmos.ask.intent import EmbedFn, IntentIndex, Scored, decide, masked
from llmos.ask.ops import OPERATIONS, Operation
from llmos.ask.types import AskOut, PlanStep
from llmos.auth.policy import required_scopes
from llmos.auth.scopes import allows
from llmos.errors import NotFound
from llmos.kernel.core import Kernel

EMBED_MODEL = "minilm-l6"
_VERBS = (r"load|unload|list|show|pause|resume|cancel|abort|stop|train|fine-?tune|tune|search|look up|find|create|"
          r"make|roll ?back|revert|free|evict|set up|turn on|enable|start|run")
_SPLIT = re.compile(rf"\s*(?:;|\.\s+|,?\s*\band then\b|,?\s*\bthen\b|,?\s*\bafter that\b|,?\s+and\s+(?=(?:{_VERBS})\b))\s*",
                    re.IGNORECASE)


def clauses(text: str) -> list[str]:
    return [c.strip(" ,.") for c in _SPLIT.split(text.strip()) if c and c.strip(" ,.")]


@dataclass
class Draft:
    """A clause's outcome: steps, or a question (with the names it offers)."""

    steps: list[PlanStep] = field(default_factory=list)
    question: str | None = None
    options: list[str] = field(default_factory=list)


class Planner:
    def __init__(self, kernel: Kernel, *, embed_model: str = EMBED_MODEL, chat_model: str = llm.CHAT_MODEL) -> None:
        self.kernel, self.embed_model, self.chat_model = kernel, embed_model, chat_model
        self._indexes: dict[str, IntentIndex] = {}  # embedding model digest -> its index

    async def _embedder(self, tenant: str) -> tuple[EmbedFn, IntentIndex]:
        try:
            r = await asyncio.to_thread(self.kernel.resolve, self.embed_model, "embed", tenant=tenant)
        except NotFound:
            raise NotFound(f"asking needs the embedding model {self.embed_model!r}, which this daemon's store "
                           "does not hold (it is built in: see `llmos doctor`)", param="text") from None

        async def embed(texts: list[str]) -> np.ndarray:
            vectors = np.asarray(await self.kernel.call(r, lambda e: e.embed(texts)), dtype=np.float32)
            return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

        if r.info.digest not in self._indexes:
            self._indexes[r.info.digest] = await IntentIndex.build(embed)
        return embed, self._indexes[r.info.digest]

    async def plan(self, text: str, entities: Entities, tenant: str, scopes: Iterable[str]) -> AskOut:
        parts = clauses(text)
        if not parts:  # only separators: nothing to plan
            return _checked(text, [], set(scopes))
        embed, index = await self._embedder(tenant)
        mentions = [entities.mentions(p) for p in parts]
        vectors = await embed([masked(p, m) for p, m in zip(parts, mentions)])
        steps: list[PlanStep] = []
        for part, found, vector in zip(parts, mentions, vectors):
            draft = await self._clause(part, found, index.rank(vector, part), entities, tenant)
            if draft.question is not None:
                return AskOut(status="question", text=text, message=draft.question, question=draft.question,
                              options=draft.options)
            steps += draft.steps
        return _checked(text, steps, set(scopes))

    async def _clause(self, part: str, found: list[Mention], ranked: list[Scored], entities: Entities,
                      tenant: str) -> Draft:
        chosen = decide(ranked)
        if isinstance(chosen, list):
            return _which(part, chosen)
        filled = fill(chosen, part, found, entities)
        if filled.question is not None:
            return Draft(question=filled.question, options=filled.options)
        steps = []
        for args in filled.sets:
            if filled.open:
                done = await llm.complete(self.kernel, chosen, args, filled.open, part, tenant, self.chat_model)
                if done is None or not _grounded(done, args, part):
                    wanted = ", ".join(p.description for p in filled.open)
                    return Draft(question=f"To {chosen.summary}, I need {wanted}: please say it in the request.")
                args = done
            steps.append(_step(chosen, args))
        return Draft(steps=steps)


def _grounded(done: dict[str, object], known: dict[str, object], part: str) -> bool:
    """Every free text the chat model wrote is made of the request's own words."""
    words = set(re.findall(r"[\w-]+", part.lower()))
    for key, value in done.items():
        if key in known or not isinstance(value, str):
            continue
        if not value.strip() or not set(re.findall(r"[\w-]+", value.lower())) <= words:
            return False
    return True


def _step(op: Operation, args: dict[str, object]) -> PlanStep:
    args = op.with_defaults(args)
    return PlanStep(operation=op.name, summary=op.describe(args), arguments=args, call=op.call(args),
                    changes=op.changes)


def _which(part: str, candidates: list[Operation]) -> Draft:
    if not candidates:
        known = "; ".join(op.summary for op in OPERATIONS)
        return Draft(question=f"I could not tell what \"{part}\" asks for. I can: {known}.",
                     options=[op.name for op in OPERATIONS])
    shown = " or ".join(f"{op.summary} ({op.name})" for op in candidates)
    return Draft(question=f"\"{part}\" is unclear: did you mean to {shown}?", options=[op.name for op in candidates])


def _checked(text: str, steps: list[PlanStep], scopes: set[str]) -> AskOut:
    """The plan, or a refusal naming each step the key may not call (then nothing runs)."""
    denied = []
    for s in steps:
        needed = required_scopes(s.call.method, s.call.path)
        if not any(allows(scopes, n) for n in needed):
            denied.append(f"{s.summary} needs the {' or '.join(needed)} scope")
    if denied:
        msg = (f"This key (scopes: {', '.join(sorted(scopes))}) may not do this: {'; '.join(denied)}. "
               "Nothing was run.")
        return AskOut(status="refused", text=text, message=msg, steps=steps)
    if not steps:
        return AskOut(status="question", text=text, message="What should I do?", question="What should I do?")
    what = "; ".join(f"{i + 1}. {s.summary}" for i, s in enumerate(steps))
    return AskOut(status="planned", text=text, message=f"Plan: {what}", steps=steps)

