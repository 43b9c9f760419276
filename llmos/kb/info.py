"""The typed records the knowledge-base service returns to the API and the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

SearchMode = Literal["hybrid", "vector", "keyword"]


class KbInfo(BaseModel):
    object: Literal["knowledge_base"] = "knowledge_base"
    name: str
    embed_model: str
    embed_digest: str | None
    chunk_size: int
    overlap: int
    version: int
    documents: int = 0
    chunks: int = 0
    created_at: datetime
    updated_at: datetime


class DocumentInfo(BaseModel):
    name: str
    kind: str
    digest: str  # the extracted text's blob
    source_digest: str
    chars: int
    chunks: int
    version: int


class VersionInfo(BaseModel):
    version: int
    operation: str
    embed_digest: str | None
    detail: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class KbDetail(KbInfo):
    vector_index: Literal["pgvector", "faiss"] = "faiss"  # where vector search runs (see docs/knowledge.md)
    document_list: list[DocumentInfo] = Field(default_factory=list)
    versions: list[VersionInfo] = Field(default_factory=list)


class FailedFile(BaseModel):
    file: str
    reason: str


class AddReport(BaseModel):
    """What one ``add`` did: a new version holding the added and replaced documents, or none."""

    knowledge_base: str
    version: int
    added: list[str] = Field(default_factory=list)
    replaced: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    failed: list[FailedFile] = Field(default_factory=list)
    chunks: int = 0  # chunks written by this add
    reembedded: int = 0  # chunks embedded again first because the embedding model changed


class Passage(BaseModel):
    """One search result: a chunk of a document, its score and where each method ranked it (1-based)."""

    document: str
    chunk: int  # the chunk's position in its document (0-based)
    chunk_id: int
    score: float
    text: str
    vector_rank: int | None = None
    keyword_rank: int | None = None


class SearchResult(BaseModel):
    object: Literal["list"] = "list"
    knowledge_base: str
    version: int
    mode: SearchMode
    data: list[Passage]
    vector_index: str | None = None  # pgvector-hnsw, faiss-flat or faiss-hnsw; None for keyword search
