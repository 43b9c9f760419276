"""An operation's arguments from a request's words.

Names come only from the mentions of things that exist for the caller (``llmos.ask.entities``); numbers,
shares and choices from the words; a free text (a search query, a new name) from the phrase after "for",
"about", "called"... A required value the words do not give is handed to the chat model (``llmos.ask.llm``)
under a schema that admits only valid values, or, for a name, turned into a question back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from llmos.ask.entities import Entities, Mention
from llmos.ask.ops import ENTITY_KINDS, Operation, Param, ParamKind

_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*(%|percent\b)")
_FRACTION = re.compile(r"(?<![\w.])(0?\.\d+)(?![\w.])")
_INTEGER = re.compile(r"(?<![\w.%-])(\d{1,4})(?![\w.%-])")
_QUERY = re.compile(r"\b(?:for|about|on|regarding|mention(?:s|ing)?)\s+(.+)$", re.IGNORECASE)
_NAMED = re.compile(r"\b(?:called|named|name it|as)\s+[\"']?([A-Za-z0-9][\w.-]{0,63})", re.IGNORECASE)
_TENANT = re.compile(r"\btenant\s+[\"']?([A-Za-z0-9][\w.-]{0,127})", re.IGNORECASE)
_SCOPE_WORDS = {"read": r"read(?:-only|ing)?", "infer": r"infer(?:ence)?|inferring", "train": r"train(?:ing)?",
                "admin": r"admin(?:istrator|istration)?"}
_QUERY_TAIL = re.compile(r"(?:\s+(?:in|from|of|using|within|the|my|our|knowledge base|kb|docs?)\b)+\s*$", re.IGNORECASE)


@dataclass
class Filled:
    """Arguments found (one set per step: a name mentioned twice makes two steps), what is still open
    for the chat model, and the question to ask when a name is missing."""

    sets: list[dict[str, Any]] = field(default_factory=list)
    open: list[Param] = field(default_factory=list)
    question: str | None = None
    options: list[str] = field(default_factory=list)


def _words_value(p: Param, text: str, mentions: list[Mention]) -> Any:
    plain = _outside(text, mentions)
    low = plain.lower()
    if p.kind == ParamKind.CHOICE:
        hits = [c for c in p.choices if re.search(rf"\b{re.escape(c)}\b", low)]
        return hits[0] if len(hits) == 1 else None
    if p.kind == ParamKind.SHARE:
        m = _PERCENT.search(low)
        if m and 0 < float(m.group(1)) < 100:
            return round(float(m.group(1)) / 100, 4)
        m = _FRACTION.search(low)
        return float(m.group(1)) if m and 0 < float(m.group(1)) < 1 else None
    if p.kind == ParamKind.INTEGER:
        nums = [int(n) for n in _INTEGER.findall(low)]
        nums = [n for n in nums if (p.minimum is None or n >= p.minimum) and (p.maximum is None or n <= p.maximum)]
        return nums[0] if len(nums) == 1 else None
    if p.kind == ParamKind.SCOPES:
        hits = [c for c in p.choices if re.search(rf"\b(?:{_SCOPE_WORDS.get(c, re.escape(c))})\b", low)]
        return hits or None
    if p.kind == ParamKind.TEXT:
        return _text_value(p, plain)
    return None


def _text_value(p: Param, plain: str) -> str | None:
    if p.name == "tenant":
        m = _TENANT.search(plain)
        return m.group(1).strip(".") if m else None
    if p.name == "name":
        m = _NAMED.search(plain)
        return m.group(1).strip(".") if m else None
    m = _QUERY.search(plain)
    if not m:
        return None
    value = _QUERY_TAIL.sub("", " " + m.group(1).strip(" ?.!\"'")).strip(" ?.!\"'")
    return value or None


def _outside(text: str, mentions: list[Mention]) -> str:
    """``text`` with the mentioned names blanked out, so a name's digits or words are not read as values."""
    out = list(text)
    for m in mentions:
        out[m.start:m.end] = [" "] * (m.end - m.start)
    return "".join(out)


def _ask_for(p: Param, entities: Entities, text: str) -> tuple[str, list[str]]:
    if p.kind == ParamKind.FILE:
        return _ask_for_file(entities, text)
    known = entities.known(p.kind)
    what = {ParamKind.KB: "knowledge base", ParamKind.KEY: "key (its id, key_...)"}.get(p.kind, p.kind.value)
    if not known:
        return f"Which {what}? There is no {what} you can use yet.", []
    shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
    return f"Which {what} ({p.description})? The ones you can use: {shown}.", known


def _ask_for_file(entities: Entities, text: str) -> tuple[str, list[str]]:
    missing = entities.unknown_paths(text)
    if missing:
        return (f"I cannot find the file {missing[0]}: give the path of an existing file (with `llmos ask`, "
                "relative to where it runs), or upload it to /v1/files and name its id.", [])
    return ("Which file? Name its path (with `llmos ask`) or the id of a file uploaded to /v1/files.",
            entities.known(ParamKind.FILE))


def fill(op: Operation, text: str, mentions: list[Mention], entities: Entities) -> Filled:
    """Arguments of ``op`` for ``text``; a missing or unknown name is a question, never a guess."""
    base: dict[str, Any] = {}
    repeated: tuple[str, list[str]] | None = None
    out = Filled()
    for p in op.params:
        if p.kind in ENTITY_KINDS:
            values = list(dict.fromkeys(m.value for m in mentions if m.kind == p.kind))
            if not values:
                out.question, out.options = _ask_for(p, entities, text)
                return out
            if len(values) > 1:
                if repeated is not None:  # two names repeated: which goes with which is a guess
                    out.question = f"Several {p.kind.value}s are named ({', '.join(values)}); ask for one at a time."
                    return out
                repeated = (p.name, values)
            base[p.name] = values[0]
            continue
        value = _words_value(p, text, mentions)
        if value is not None:
            base[p.name] = value
        elif p.required and p.kind == ParamKind.SCOPES:  # what a key may do is never guessed
            out.question = f"Which scopes should it have ({', '.join(p.choices)})?"
            out.options = list(p.choices)
            return out
        elif p.required:
            out.open.append(p)
    names, values = repeated if repeated else (None, [None])
    out.sets = [base if names is None else {**base, names: v} for v in values]
    return out
