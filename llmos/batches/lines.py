"""A batch's input file, line by line: each line is one request ``{"custom_id", "method": "POST", "url",
"body"}``; a line that is not becomes an error record instead (the rest of the batch still runs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CUSTOM_ID_MAX = 512
_FIELDS = {"custom_id", "method", "url", "body"}


@dataclass(frozen=True)
class BatchLine:
    """One request of the input: ``number`` is its line in the file (1-based), the journal's key."""

    number: int
    custom_id: str
    url: str
    body: dict[str, Any]


@dataclass(frozen=True)
class BadLine:
    number: int
    custom_id: str | None
    message: str


def read_lines(path: Path, endpoint: str) -> Iterator[BatchLine | BadLine]:
    """Every non-blank line of the input, checked; repeated custom_ids after the first are bad lines."""
    seen: set[str] = set()
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            line = _check(number, raw, endpoint)
            if isinstance(line, BatchLine):
                if line.custom_id in seen:
                    line = BadLine(number, line.custom_id, f"custom_id {line.custom_id!r} appears on an earlier "
                                   "line; each request of a batch needs its own")
                else:
                    seen.add(line.custom_id)
            yield line


def _check(number: int, raw: bytes, endpoint: str) -> BatchLine | BadLine:
    try:
        value = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return BadLine(number, None, f"line {number} is not a JSON object")  # uploads are checked: rare
    if not isinstance(value, dict):
        return BadLine(number, None, f"line {number} is not a JSON object")
    custom_id = value.get("custom_id")
    cid = custom_id if isinstance(custom_id, str) else None
    problem = _problem(value, endpoint)
    if problem is not None:
        return BadLine(number, cid, f"line {number}: {problem}")
    assert cid is not None
    return BatchLine(number, cid, value["url"], value["body"])


def _problem(value: dict[str, Any], endpoint: str) -> str | None:
    unknown = sorted(set(value) - _FIELDS)
    if unknown:
        return f"unknown field {unknown[0]!r}; a line holds custom_id, method, url and body"
    custom_id = value.get("custom_id")
    if not isinstance(custom_id, str) or not 0 < len(custom_id) <= CUSTOM_ID_MAX:
        return f"custom_id must be a string of 1 to {CUSTOM_ID_MAX} characters"
    if value.get("method") != "POST":
        return "method must be \"POST\""
    if value.get("url") != endpoint:
        return f"url {value.get('url')!r} is not this batch's endpoint {endpoint!r}"
    body = value.get("body")
    if not isinstance(body, dict):
        return "body must be a JSON object: the request's body"
    if body.get("stream"):
        return "body.stream must be false or absent: a batch collects whole responses"
    return None
