"""Few-shot extraction with a generator: the prompt it answers, and reading its answer into spans.

The model writes one ``TYPE: mention`` line per entity. A mention becomes a span only where it
really occurs in the input (case-sensitive first, then ignoring case), at word boundaries, without
overlapping a span already taken: generated text never invents offsets.
"""

from __future__ import annotations

import re

from llmos.engines.base import ChatMessage, Span
from llmos.prompt_tasks.spec import Example, PromptTaskSpec

NONE = "NONE"
# Generation offers no calibrated confidence for a mention; a found mention scores by how it matched.
EXACT, CASELESS = 1.0, 0.5
_LINE = re.compile(r"^\s*[-*\d.)\s]*([^:\n]+?)\s*:\s*(.+?)\s*$")


def answer_of(example: Example) -> str:
    """How the model is shown to answer an example."""
    lines = [f"{m.label}: {m.text}" for m in example.entities or []]
    return "\n".join(lines) or NONE


def messages(spec: PromptTaskSpec, text: str) -> list[ChatMessage]:
    """Few-shot turns, then the input's turn."""
    turns: list[ChatMessage] = []
    for e in spec.examples:
        turns += [ChatMessage("user", spec.render(e.text)), ChatMessage("assistant", answer_of(e))]
    return [*turns, ChatMessage("user", spec.render(text))]


def plain_prompt(spec: PromptTaskSpec, text: str) -> str:
    """The same prompt for a base without a chat template: blocks of text ending in ``Answer:``."""
    shots = "".join(f"{spec.render(e.text)}\nAnswer:\n{answer_of(e)}\n\n" for e in spec.examples)
    return f"{shots}{spec.render(text)}\nAnswer:\n"


def parse_mentions(output: str, types: list[str]) -> list[tuple[str, str]]:
    """(type, mention) pairs from the model's lines; unknown types and malformed lines are dropped."""
    by_key = {t.lower(): t for t in types}
    found = []
    for line in output.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        label = by_key.get(match.group(1).strip().lower())
        mention = match.group(2).strip().strip("\"'`").strip()
        if label and mention and mention.upper() != NONE:
            found.append((label, mention))
    return found


def to_spans(text: str, mentions: list[tuple[str, str]]) -> list[Span]:
    """Spans for every occurrence of each mention in ``text``, earliest first, never overlapping."""
    taken: list[Span] = []
    for label, mention in mentions:
        for start, end, score in _occurrences(text, mention):
            if not any(start < s.end and s.start < end for s in taken):
                taken.append(Span(start, end, label, text[start:end], score))
    return sorted(taken, key=lambda s: s.start)


def _occurrences(text: str, mention: str) -> list[tuple[int, int, float]]:
    pattern = rf"(?<!\w){re.escape(mention)}(?!\w)"
    exact = [(m.start(), m.end(), EXACT) for m in re.finditer(pattern, text)]
    if exact:
        return exact
    return [(m.start(), m.end(), CASELESS) for m in re.finditer(pattern, text, flags=re.IGNORECASE)]
