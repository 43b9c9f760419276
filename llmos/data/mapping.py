"""From raw columns to typed rows: infer the task and column mapping, convert and check every record.

A mapping is ``{field: column}``, where the fields are a task's (``text``/``label``; ``tokens``/``tags``;
``instruction``/``input``/``output`` or ``messages``) and a column is a name from the file's header,
or a position (``0``, ``1``, ``-1``) for headerless files and CoNLL. Whatever is not given is inferred
from well-known column names; what cannot be inferred is an error that lists the columns found.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from llmos.data.columns import ALIASES
from llmos.data.readers import Format, RawTable
from llmos.data.rows import ClassifyRow, Row, SftRow, TagRow, Task, parse_task
from llmos.errors import ImportFailed, InvalidInput

FIELDS: dict[Task, tuple[str, ...]] = {Task.classify: ("text", "label"), Task.tag: ("tokens", "tags"),
                                       Task.sft: ("instruction", "input", "output", "messages", "rejected")}
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
          "model": "assistant", "system": "system"}
_INT = re.compile(r"^-?\d+$")


@dataclass
class Mapped:
    """The outcome of mapping a table: typed rows plus what was decided on the way."""

    task: Task
    mapping: dict[str, str]
    rows: list[Row]
    labels: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def map_table(table: RawTable, name: str, task: Task | str | None = None,
              mapping: dict[str, str | int] | None = None) -> Mapped:
    """Decide task and mapping, then convert every record; raises ImportFailed naming the line."""
    resolved = {f: resolve_column(col, table.columns, name) for f, col in (mapping or {}).items()}
    the_task = parse_task(task) if task else infer_task(table, resolved, name)
    _check_fields(the_task, resolved)
    full = infer_mapping(the_task, table, resolved, name)
    convert = {Task.classify: _classify_rows, Task.tag: _tag_rows, Task.sft: _sft_rows}[the_task]
    return convert(table, full, name)


def resolve_column(spec: str | int, columns: list[str], name: str) -> str:
    """A column by exact name, case-insensitive name, or position (negative counts from the end)."""
    text = str(spec).strip()
    if text in columns:
        return text
    lowered = [c for c in columns if c.lower() == text.lower()]
    if lowered:
        return lowered[0]
    if _INT.match(text) and -len(columns) <= int(text) < len(columns):
        return columns[int(text)]
    raise ImportFailed(f"{name}: no column {spec!r}; columns found: {_listing(columns)}")


def _listing(columns: list[str]) -> str:
    if columns and all(c.isdigit() for c in columns):
        return f"{len(columns)} unnamed (no header), by position 0..{len(columns) - 1}"
    return ", ".join(columns) or "(none)"


def _check_fields(task: Task, mapping: dict[str, str]) -> None:
    unknown = sorted(set(mapping) - set(FIELDS[task]))
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(unknown)} for task {task.value}; its fields are "
                           f"{', '.join(FIELDS[task])}")


# -- inference -----------------------------------------------------------------------------------
def _alias(fieldname: str, columns: list[str], used: set[str]) -> str | None:
    by_lower = {c.strip().lower(): c for c in columns if c not in used}
    return next((by_lower[a] for a in ALIASES[fieldname] if a in by_lower), None)


def infer_task(table: RawTable, mapping: dict[str, str], name: str) -> Task:
    if table.format is Format.conll or {"tokens", "tags"} & set(mapping):
        return Task.tag
    if {"instruction", "output", "messages", "input"} & set(mapping):
        return Task.sft
    cols, sample = table.columns, table.records[0][1]
    tokens = _alias("tokens", cols, set())
    if tokens and isinstance(sample.get(tokens), list):
        return Task.tag
    if _alias("messages", cols, set()) or (_alias("instruction", cols, set()) and _alias("output", cols, set())):
        return Task.sft
    if "label" in mapping or "text" in mapping or _alias("label", cols, set()) or not table.header:
        return Task.classify
    raise ImportFailed(f"{name}: cannot tell the task from the columns found ({_listing(cols)}); pass the task "
                       "(classify, tag or sft) and a mapping such as text=<column> label=<column>")


def infer_mapping(task: Task, table: RawTable, given: dict[str, str], name: str) -> dict[str, str]:
    mapping = dict(given)
    used = set(mapping.values())
    if task is Task.tag and table.format is Format.conll:
        mapping.setdefault("tokens", table.columns[0])
        mapping.setdefault("tags", table.columns[-1])
    if task is Task.classify and not table.header and len(table.columns) == 2 and not mapping:
        mapping = _positional_classify(table)
    for f in FIELDS[task]:
        if f not in mapping and (col := _alias(f, table.columns, used)):
            mapping[f] = col
            used.add(col)
    missing = [f for f in FIELDS[task] if f not in mapping]
    rest = [c for c in table.columns if c not in used]
    if task is Task.classify and not table.header and len(missing) == 1 and len(rest) == 1:
        # headerless two-column file with one field given: the other column is the other field
        mapping[missing[0]] = rest[0]
    _require(task, mapping, table.columns, name)
    return mapping


def _positional_classify(table: RawTable) -> dict[str, str]:
    """Headerless two-column files (``label<TAB>text``): the label column is the one with fewer values."""
    sample = [rec for _, rec in table.records[:2000]]
    distinct = [len({r["0"] for r in sample}), len({r["1"] for r in sample})]
    label = "0" if distinct[0] <= distinct[1] else "1"
    return {"label": label, "text": "1" if label == "0" else "0"}


def _require(task: Task, mapping: dict[str, str], columns: list[str], name: str) -> None:
    needed = {Task.classify: ["text", "label"], Task.tag: ["tokens", "tags"]}.get(task)
    if task is Task.sft:
        needed = [] if "messages" in mapping else ["instruction", "output"]
    missing = [f for f in needed if f not in mapping]
    if missing:
        example = " ".join(f"{f}=<column>" for f in missing)
        raise ImportFailed(f"{name}: no {' or '.join(missing)} column for task {task.value}; columns found: "
                           f"{_listing(columns)}. Give a mapping, e.g. {example}")


# -- conversion ----------------------------------------------------------------------------------
def _text(value: Any, fieldname: str, name: str, line: int) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ImportFailed(f"{name}: line {line}: {fieldname} holds a JSON {type(value).__name__}, expected text",
                       line=line)


def _label(value: Any, name: str, line: int) -> tuple[str, str]:
    """(label as text, its kind 'number' or 'word'): kinds are checked to be one per dataset."""
    if isinstance(value, bool) or isinstance(value, float) or not isinstance(value, (str, int)):
        raise ImportFailed(f"{name}: line {line}: label {value!r} is not a class name or class number "
                           "(a classifier needs discrete labels)", line=line)
    text = str(value).strip()
    if not text:
        raise ImportFailed(f"{name}: line {line}: the label is empty", line=line)
    return text, "number" if _INT.match(text) else "word"


def _classify_rows(table: RawTable, mapping: dict[str, str], name: str) -> Mapped:
    rows: list[Row] = []
    first_of_kind: dict[str, tuple[int, str]] = {}
    for line, rec in table.records:
        label, kind = _label(rec.get(mapping["label"]), name, line)
        first_of_kind.setdefault(kind, (line, label))
        rows.append(ClassifyRow(text=_text(rec.get(mapping["text"]), "text", name, line), label=label))
    if len(first_of_kind) > 1:
        (l1, v1), (l2, v2) = first_of_kind["number"], first_of_kind["word"]
        raise ImportFailed(f"{name}: mixed label types in column {mapping['label']!r}: numbers (e.g. {v1!r} on "
                           f"line {l1}) and words (e.g. {v2!r} on line {l2}); use one kind for every row")
    counts = Counter(r.label for r in rows)  # type: ignore[union-attr]
    _check_label_counts(counts, len(rows), mapping, name)
    return Mapped(Task.classify, mapping, rows, sort_labels(counts))


def _check_label_counts(counts: Counter[str], n: int, mapping: dict[str, str], name: str) -> None:
    if len(counts) < 2:
        only = next(iter(counts))
        raise ImportFailed(f"{name}: every row has the label {only!r}; a classifier needs at least two classes")
    if n >= 50 and len(counts) > n / 2:
        raise ImportFailed(f"{name}: column {mapping['label']!r} has {len(counts):,} distinct values in {n:,} rows, "
                           "so it looks like text rather than labels; check the mapping (text=..., label=...)")


def sort_labels(labels: Counter[str] | set[str]) -> list[str]:
    keys = list(labels)
    return sorted(keys, key=int) if all(_INT.match(k) for k in keys) else sorted(keys)


def _tag_rows(table: RawTable, mapping: dict[str, str], name: str) -> Mapped:
    rows: list[Row] = []
    for line, rec in table.records:
        tokens = _sequence(rec.get(mapping["tokens"]), "tokens", name, line)
        tags = _sequence(rec.get(mapping["tags"]), "tags", name, line)
        if len(tokens) != len(tags):
            raise ImportFailed(f"{name}: line {line}: {len(tokens)} tokens but {len(tags)} tags", line=line)
        if tokens:
            rows.append(TagRow(tokens=tokens, tags=tags))
    labels = sort_labels({t for r in rows for t in r.tags})  # type: ignore[union-attr]
    return Mapped(Task.tag, mapping, rows, labels)


def _sequence(value: Any, fieldname: str, name: str, line: int) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        return [str(v) for v in value]
    raise ImportFailed(f"{name}: line {line}: {fieldname} must be a list of strings, got {type(value).__name__}",
                       line=line)


def _sft_rows(table: RawTable, mapping: dict[str, str], name: str) -> Mapped:
    rows: list[Row] = []
    multi = 0
    for line, rec in table.records:
        try:
            rejected = _text(rec.get(mapping["rejected"]), "rejected", name, line) if "rejected" in mapping else ""
            if "messages" in mapping:
                rows.append(SftRow(messages=_messages(rec.get(mapping["messages"]), name, line), rejected=rejected))
                continue
            output, alternatives = _output(rec.get(mapping["output"]), name, line)
            multi += alternatives > 1
            inp = _text(rec.get(mapping["input"]), "input", name, line) if "input" in mapping else ""
            rows.append(SftRow(instruction=_text(rec.get(mapping["instruction"]), "instruction", name, line),
                               input=inp, output=output, rejected=rejected))
        except ValidationError as exc:
            raise ImportFailed(f"{name}: line {line}: {exc.errors()[0]['msg']}", line=line) from None
    warnings = [f"{multi} row(s) list several answers; the first one is the training target"] if multi else []
    return Mapped(Task.sft, mapping, rows, [], warnings)


def _output(value: Any, name: str, line: int) -> tuple[str, int]:
    if isinstance(value, list):
        if not value:
            raise ImportFailed(f"{name}: line {line}: the output list is empty", line=line)
        return _text(value[0], "output", name, line), len(value)
    return _text(value, "output", name, line), 1


def _messages(value: Any, name: str, line: int) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ImportFailed(f"{name}: line {line}: messages must be a non-empty list of {{role, content}} objects",
                           line=line)
    out = []
    for m in value:
        if not isinstance(m, dict):
            raise ImportFailed(f"{name}: line {line}: a message is a {type(m).__name__}, expected an object", line=line)
        role = _ROLES.get(str(m.get("role", m.get("from", ""))).lower())
        if role is None:
            raise ImportFailed(f"{name}: line {line}: unknown message role {m.get('role', m.get('from'))!r}; use "
                               "system, user or assistant", line=line)
        out.append({"role": role, "content": _text(m.get("content", m.get("value")), "content", name, line)})
    return out
