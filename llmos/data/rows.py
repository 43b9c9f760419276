"""Typed dataset rows for the three task kinds, and their canonical JSONL form.

A dataset version's content is its rows as canonical JSONL (sorted keys, no spaces, UTF-8), so equal
rows give equal bytes and an equal digest. Rows of a split version carry ``split``; rows of an unsplit
version leave it out, which keeps one blob per version and lets a trainer read one split by filtering.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from enum import Enum
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmos.errors import InvalidInput

SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")


class Task(str, Enum):
    classify = "classify"  # text -> one label
    tag = "tag"  # tokens -> one tag per token (NER, POS)
    sft = "sft"  # instruction [+ input] -> output, or a chat conversation


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    split: SplitName | None = None


class ClassifyRow(_Row):
    text: str
    label: str


class TagRow(_Row):
    tokens: list[str]
    tags: list[str]

    @model_validator(mode="after")
    def _aligned(self) -> "TagRow":
        if len(self.tokens) != len(self.tags):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.tags)} tags")
        return self


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Literal["system", "user", "assistant"]
    content: str


class SftRow(_Row):
    """Either ``instruction`` (+ optional ``input``) -> ``output``, or a ``messages`` conversation."""

    instruction: str = ""
    input: str = ""
    output: str = ""
    messages: list[ChatMessage] = Field(default_factory=list)
    rejected: str = ""  # a worse answer to the same prompt: with it the row is a preference pair too

    @model_validator(mode="after")
    def _one_shape(self) -> "SftRow":
        if self.messages and (self.instruction or self.input or self.output):
            raise ValueError("a row has either messages or instruction/input/output, not both")
        if self.messages and self.messages[-1].role != "assistant":
            raise ValueError("the last message must be the assistant's (the target to learn)")
        return self

    def to_messages(self) -> list[ChatMessage]:
        """The conversation a chat template renders: the stored one, or user/assistant built from fields."""
        if self.messages:
            return list(self.messages)
        user = f"{self.instruction}\n\n{self.input}" if self.input else self.instruction
        return [ChatMessage(role="user", content=user), ChatMessage(role="assistant", content=self.output)]


Row = Union[ClassifyRow, TagRow, SftRow]
ROW_TYPES: dict[Task, type[_Row]] = {Task.classify: ClassifyRow, Task.tag: TagRow, Task.sft: SftRow}


def parse_task(task: Task | str) -> Task:
    try:
        return Task(task)
    except ValueError:
        raise InvalidInput(f"unknown task {task!r}; use one of {', '.join(t.value for t in Task)}") from None


def row_type(task: Task | str) -> type[_Row]:
    return ROW_TYPES[Task(task)]


def input_text(row: Row) -> str:
    """The part of a row a model reads (not its target): used for dedup keys and near-dup detection."""
    if isinstance(row, ClassifyRow):
        return row.text
    if isinstance(row, TagRow):
        return " ".join(row.tokens)
    if row.messages:
        return "\n".join(m.content for m in row.messages[:-1])
    return f"{row.instruction}\n{row.input}" if row.input else row.instruction


def target_of(row: Row) -> str:
    if isinstance(row, ClassifyRow):
        return row.label
    if isinstance(row, TagRow):
        return " ".join(row.tags)
    return row.messages[-1].content if row.messages else row.output


def to_jsonl(rows: Iterable[Row]) -> bytes:
    """Canonical JSONL: defaults left out, keys sorted, compact, UTF-8; equal rows, equal bytes."""
    lines = (json.dumps(r.model_dump(mode="json", exclude_defaults=True), sort_keys=True, ensure_ascii=False,
                        separators=(",", ":")) for r in rows)
    return "".join(line + "\n" for line in lines).encode("utf-8")


def from_jsonl(data: Iterable[bytes], task: Task | str) -> Iterator[Row]:
    """Rows back from a stored blob's lines (the store verified the digest before this)."""
    cls = row_type(task)
    for line in data:
        if line.strip():
            yield cls.model_validate_json(line)  # type: ignore[misc]
