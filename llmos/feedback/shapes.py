"""What a correction looks like for each kind of request, and the training rows it becomes.

A request log row names its route; the correction must fit it:

* ``classify``: a label, or a list with one label (or null: "that one was right") per input text;
* ``tag``: a list of entity spans ``{"start", "end", "label"}`` (one input), or one such list (or null)
  per input; offsets are characters of the input text, labels entity types (``PER``, not ``B-PER``);
* ``chat`` / ``completion``: the better answer text.

Corrections are stored normalised (classify and tag as one entry per input), so the same correction
sent twice in either form compares equal.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from llmos.data.rows import ChatMessage, ClassifyRow, Row, SftRow, TagRow
from llmos.errors import InvalidInput

TEXT_ROUTES = ("chat", "completion")


@dataclass(frozen=True)
class Example:
    """One corrected input: what the model read and what it should have answered."""

    feedback_id: int
    request_id: str
    model: str  # the version that answered (``name:tag``)
    route: str
    text: str  # a chat's input is its conversation as logged (``conversation`` reads it back)
    target: Any  # a label, a list of spans, or an answer text
    rejected: str = ""  # chat / completion: a worse answer to the same input (a preference pair)


def expected_shape(route: str, n_inputs: int, labels: list[str]) -> str:
    """The sentence a 400 answer uses to say what a correction for ``route`` looks like."""
    if route == "classify":
        known = f" (one of: {', '.join(labels)})" if labels else ""
        many = f", or a list of {n_inputs} labels (null for a right one)" if n_inputs > 1 else ""
        return f"a classify correction is a label{known}{many}"
    if route == "tag":
        many = f", or a list of {n_inputs} such lists (null for a right one)" if n_inputs > 1 else ""
        return f'a tag correction is a list of spans {{"start": int, "end": int, "label": str}}{many}'
    if route in TEXT_ROUTES:
        return f"a {route} correction is the better answer as a non-empty string"
    return f"requests of route {route!r} take a rating and a comment, not a correction"


CHARS_PER_TOKEN = 4  # a context of N tokens holds about 4N characters of text: the bound on a text correction


def normalise(route: str, correction: Any, inputs: list[str] | None, n_inputs: int, labels: list[str],
              max_chars: int | None = None) -> Any:
    """The stored form of ``correction``; InvalidInput naming the expected shape when it does not fit (a text
    correction longer than ``max_chars``, what the model's context holds, included)."""
    def bad(why: str = "") -> InvalidInput:
        return InvalidInput(f"{why}{'; ' if why else ''}{expected_shape(route, n_inputs, labels)}",
                            param="correction")

    if route == "classify":
        items = [correction] if isinstance(correction, str) and n_inputs == 1 else correction
        if not isinstance(items, list) or len(items) != n_inputs or \
                not all(i is None or isinstance(i, str) for i in items):
            raise bad()
        unknown = [i for i in items if i is not None and labels and i not in labels]
        if unknown:
            raise bad(f"unknown label {unknown[0]!r}")
        return items
    if route == "tag":
        single = isinstance(correction, list) and all(isinstance(s, dict) for s in correction) and n_inputs == 1
        items = [correction] if single else correction
        if not isinstance(items, list) or len(items) != n_inputs:
            raise bad()
        types = sorted({lab.split("-", 1)[-1] for lab in labels if lab != "O"})
        return [None if spans is None else _spans(spans, (inputs or [None] * n_inputs)[i], types, bad)
                for i, spans in enumerate(items)]
    if route in TEXT_ROUTES and isinstance(correction, str) and correction.strip():
        if max_chars is not None and len(correction) > max_chars:
            raise InvalidInput(f"the correction has {len(correction)} characters, more than the model's context holds "
                               f"(at most {max_chars}); send the better answer alone", param="correction")
        return correction
    raise bad()


def _spans(spans: Any, text: str | None, types: list[str], bad: Any) -> list[dict[str, Any]]:
    if not isinstance(spans, list):
        raise bad()
    out = []
    for s in spans:
        if not isinstance(s, dict) or set(s) - {"start", "end", "label", "text", "score"} or \
                not all(isinstance(s.get(k), int) for k in ("start", "end")) or not isinstance(s.get("label"), str):
            raise bad()
        if not 0 <= s["start"] < s["end"] or (text is not None and s["end"] > len(text)):
            raise bad(f"span {s['start']}..{s['end']} is outside the input text")
        if types and s["label"] not in types:
            raise bad(f"unknown entity type {s['label']!r} (known: {', '.join(types)})")
        out.append({"start": s["start"], "end": s["end"], "label": s["label"]})
    return sorted(out, key=lambda s: (s["start"], s["end"]))


def inputs_of(route: str, prompt: str | None) -> list[str] | None:
    """The input texts a request log row kept (task routes keep them as a JSON list), or None."""
    if prompt is None:
        return None
    if route in ("classify", "tag"):
        try:
            texts = json.loads(prompt)
        except ValueError:
            return prompt.split("\n")
        return [str(t) for t in texts] if isinstance(texts, list) else [str(texts)]
    return [prompt]


def to_rows(examples: list[Example]) -> list[Row]:
    """Training rows from corrected examples: classify -> ClassifyRow, tag -> TagRow, text -> SftRow."""
    rows: list[Row] = []
    for e in examples:
        if e.route == "classify":
            rows.append(ClassifyRow(text=e.text, label=e.target))
        elif e.route == "tag":
            tokens, tags = spans_to_tags(e.text, e.target)
            if tokens:
                rows.append(TagRow(tokens=tokens, tags=tags))
        else:
            rows.append(answer_row(e.route, e.text, e.target, e.rejected))
    return rows


def answer_row(route: str, text: str, answer: str, rejected: str = "") -> SftRow:
    """The SFT row of a better answer: the logged conversation (a chat) or prompt (a completion), then it."""
    turns = conversation(text) if route == "chat" else None
    if turns is None:
        return SftRow(instruction=text, output=answer, rejected=rejected)
    return SftRow(messages=[*turns, ChatMessage(role="assistant", content=answer)], rejected=rejected)


def conversation(text: str) -> list[ChatMessage] | None:
    """The text turns of a logged chat prompt (a JSON list of ``{"role", "content"}``), or None when the
    prompt is not one (a chat logged as plain text). Tool turns are left out: SFT rows hold text turns."""
    try:
        turns = json.loads(text)
    except ValueError:
        return None
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        return None
    kept = [ChatMessage(role=t["role"], content=str(t.get("content") or "")) for t in turns
            if t.get("role") in ("system", "user", "assistant")]
    return kept if kept and kept[-1].role != "assistant" else None


def spans_to_tags(text: str, spans: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Whitespace tokens of ``text`` with IOB2 tags: a token inside a span is B- (first) or I- (rest)."""
    tokens, tags = [], []
    for m in re.finditer(r"\S+", text):
        span = next((s for s in spans if s["start"] <= m.start() < s["end"]), None)
        if span is None:
            tags.append("O")
        else:
            tags.append(("I-" if tags and tags[-1] != "O" and m.start() > span["start"] else "B-") + span["label"])
        tokens.append(m.group())
    return tokens, tags
