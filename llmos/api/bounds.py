"""Bounds on what a request may carry, shared by every route: integers that fit the database and
torch, list cursors and page sizes, names of reasonable length.

Pydantic and FastAPI check them at the edge, so nothing past a route sees an out-of-range number
(SQLite stores 64-bit integers; a torch seed is 64 bits; a page size of -1 must not mean "all").
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import AfterValidator, Field

INT64_MAX = 2**63 - 1
ID_MAX = 2**62  # row ids and cursors: far beyond any table, well inside SQLite's integers
VERSION_MAX = 2**31 - 1
PAGE_MAX = 10_000
NAME_MAX = 260  # "name:tag" (128 + 1 + 128) with room to spare

Cursor = Annotated[int, Query(ge=0, le=ID_MAX, description="only items with a larger id")]
PageSize = Annotated[int, Query(ge=1, le=PAGE_MAX, description="at most this many items")]
Version = Annotated[int, Query(ge=1, le=VERSION_MAX, description="a version number")]
ModelFilter = Annotated[str, Query(min_length=1, max_length=NAME_MAX, description="name or name:tag")]
Seed = Annotated[int, Field(ge=-(2**63), le=INT64_MAX, description="sampling seed (64-bit)")]
BodyVersion = Annotated[int, Field(ge=1, le=VERSION_MAX)]
ModelName = Annotated[str, Field(min_length=1, max_length=NAME_MAX)]


def _metadata_keys(v: dict[str, str]) -> dict[str, str]:
    if len(v) > 16 or any(not 0 < len(k) <= 64 for k in v):
        raise ValueError("at most 16 keys of 1 to 64 characters")
    return v


# OpenAI's ``metadata`` on batches and fine-tuning jobs: up to 16 string pairs, values up to 512 characters.
Metadata = Annotated[dict[str, Annotated[str, Field(max_length=512)]], AfterValidator(_metadata_keys)]
