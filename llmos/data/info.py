"""What the dataset registry returns: pydantic models that cross into the CLI and the HTTP API."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from llmos.data.mapping import sort_labels
from llmos.data.rows import SPLITS, ClassifyRow, Row, TagRow, Task
from llmos.errors import InvalidInput, InvalidName

Operation = Literal["clean", "split", "augment", "append", "feedback"]
M = TypeVar("M", bound=BaseModel)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class DatasetSource(BaseModel):
    """Where the rows came from and how columns became fields (stored in the ``schema`` column)."""

    file: str | None = None
    format: str | None = None
    columns: list[str] = Field(default_factory=list)
    header: bool | None = None
    encoding: str | None = None
    mapping: dict[str, str] = Field(default_factory=dict)


class Derivation(BaseModel):
    """How a version with a parent was made: the operation, its parameters and its report."""

    operation: Operation
    params: dict[str, Any] = Field(default_factory=dict)
    report: dict[str, Any] = Field(default_factory=dict)


class DatasetCounts(BaseModel):
    rows: int
    splits: dict[str, int] = Field(default_factory=dict)  # empty for an unsplit version
    labels: dict[str, int] = Field(default_factory=dict)  # rows per label (classify), tokens per tag (tag)


class DatasetInfo(BaseModel):
    id: int
    name: str
    version: int
    tenant: str
    task: Task
    digest: str
    size_bytes: int = 0
    labels: list[str] = Field(default_factory=list)
    counts: DatasetCounts
    source: DatasetSource
    parent: str | None = None  # "name@version" of the version this one was derived from
    derivation: Derivation | None = None
    created_at: datetime
    warnings: list[str] = Field(default_factory=list)  # from the operation that made it; not stored

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class DatasetPreview(BaseModel):
    """A file read and mapped but not registered: what an import would store."""

    file: str
    task: Task
    source: DatasetSource
    rows: int
    labels: list[str]
    preview: list[dict[str, Any]]
    warnings: list[str] = Field(default_factory=list)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise InvalidName(f"invalid dataset name {name!r}: use letters, digits, '.', '_' or '-' (up to 128, "
                          "starting with a letter or digit)")
    return name


MAX_VERSION = 2**31 - 1
_VERSION = re.compile(r"[0-9]{1,10}")


def parse_ref(ref: str, version: int | None = None) -> tuple[str, int | None]:
    """``name`` or ``name@3``; an explicit ``version`` argument wins over the suffix. Versions are
    1..2^31-1, so no number a user types reaches the database out of range."""
    name, at, suffix = ref.partition("@")
    if at and not _VERSION.fullmatch(suffix):
        raise InvalidName(f"invalid dataset reference {ref!r}: expected NAME or NAME@VERSION")
    chosen = version if version is not None else (int(suffix) if at else None)
    if chosen is not None and not 1 <= chosen <= MAX_VERSION:
        raise InvalidName(f"invalid dataset version {chosen} in {ref!r}: versions are 1 to {MAX_VERSION}")
    return check_name(name), chosen


def count_rows(rows: Sequence[Row]) -> DatasetCounts:
    splits = Counter(r.split for r in rows if r.split)
    labels: Counter[str] = Counter()
    for r in rows:
        if isinstance(r, ClassifyRow):
            labels[r.label] += 1
        elif isinstance(r, TagRow):
            labels.update(r.tags)
    return DatasetCounts(rows=len(rows), splits={s: splits[s] for s in SPLITS if splits} if splits else {},
                         labels={k: labels[k] for k in sort_labels(set(labels))})


def preview_dicts(rows: Sequence[Row], n: int = 5) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json", exclude_defaults=True) for r in rows[:n]]


def validated(cls: type[M], **values: Any) -> M:
    """Build an options model from user input; a bad value is InvalidInput naming the field."""
    try:
        return cls.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or cls.__name__
        raise InvalidInput(f"{where}: {first['msg']} (got {first.get('input')!r})") from None
