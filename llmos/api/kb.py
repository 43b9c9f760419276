"""Knowledge-base routes: create, list, show, delete, add documents (multipart upload), search.

Every route works inside the caller's tenant: another tenant's knowledge base is a 404 like an absent
one. Embeddings are computed by the kernel's embedding model worker (its memory budget and queue).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from llmos.api.bounds import NAME_MAX
from llmos.api.deps import Caller, get_caller, get_kernel, get_runtime
from llmos.errors import InvalidInput, PayloadTooLarge
from llmos.kb import (
    AddReport,
    KbDetail,
    KbInfo,
    KernelEmbedder,
    KnowledgeBases,
    SearchMode,
    SearchResult,
    search,
)
from llmos.kb.chunking import DEFAULT_OVERLAP, DEFAULT_SIZE
from llmos.kb.parse import MAX_FILE_BYTES
from llmos.kb.retrieval import MAX_K, MAX_QUERY_CHARS
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime

router = APIRouter(prefix="/v1/kb", tags=["knowledge"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
KernelDep = Annotated[Kernel, Depends(get_kernel)]
CallerDep = Annotated[Caller, Depends(get_caller)]
MAX_FILES = 256  # per upload
_CHUNK = 1 << 20


class KbCreateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    embed_model: str = Field(default="minilm-l6", min_length=1, max_length=NAME_MAX)
    chunk_size: int = Field(default=DEFAULT_SIZE, ge=50, le=20_000, description="characters per chunk")
    overlap: int = Field(default=DEFAULT_OVERLAP, ge=0, le=10_000, description="characters shared by neighbours")


class KbSearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(default=5, ge=1, le=MAX_K)
    mode: SearchMode = "hybrid"


class KbList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KbInfo]


class KbDeleted(BaseModel):
    object: Literal["knowledge_base.deleted"] = "knowledge_base.deleted"
    name: str
    deleted: bool = True


def _kbs(runtime: Runtime, caller: Caller) -> KnowledgeBases:
    return KnowledgeBases.of(runtime, caller.tenant)


@router.post("", status_code=201)
async def create_kb(body: KbCreateIn, runtime: RuntimeDep, kernel: KernelDep, caller: CallerDep) -> KbInfo:
    def create() -> KbInfo:
        embedder = KernelEmbedder.of(kernel, body.embed_model, caller.tenant)  # 400 when it cannot embed
        return _kbs(runtime, caller).create(body.name, embedder, chunk_size=body.chunk_size, overlap=body.overlap)

    return await run_in_threadpool(create)


@router.get("")
def list_kbs(runtime: RuntimeDep, caller: CallerDep) -> KbList:
    return KbList(data=_kbs(runtime, caller).list())


@router.get("/{name}")
def show_kb(name: Annotated[str, Path(max_length=128)], runtime: RuntimeDep, caller: CallerDep) -> KbDetail:
    return _kbs(runtime, caller).show(name)


@router.delete("/{name}")
def delete_kb(name: Annotated[str, Path(max_length=128)], runtime: RuntimeDep, caller: CallerDep) -> KbDeleted:
    _kbs(runtime, caller).remove(name)
    return KbDeleted(name=name)


@router.post("/{name}/documents", status_code=201)
async def add_documents(name: Annotated[str, Path(max_length=128)], runtime: RuntimeDep, kernel: KernelDep,
                        caller: CallerDep,
                        files: Annotated[list[UploadFile], File(description="text, Markdown, HTML, PDF, CSV or JSONL")]
                        ) -> AddReport:
    """Parse, chunk, embed and store the files as the next version; a file that fails is listed with why."""
    if len(files) > MAX_FILES:
        raise InvalidInput(f"{len(files)} files in one upload; the limit is {MAX_FILES}", param="files")
    kbs = _kbs(runtime, caller)
    await run_in_threadpool(kbs.get, name)  # 404 before reading any upload
    loaded = [(Path(f.filename or "upload.txt").name, await _read(f)) for f in files]
    return await run_in_threadpool(kbs.add, name, loaded, lambda model: KernelEmbedder.of(kernel, model, caller.tenant))


async def _read(upload: UploadFile) -> bytes:
    parts, size = [], 0
    while chunk := await upload.read(_CHUNK):
        size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise PayloadTooLarge(f"{upload.filename}: over the {MAX_FILE_BYTES >> 20} MiB limit per file; "
                                  "nothing was added")
        parts.append(chunk)
    return b"".join(parts)


@router.post("/{name}/search")
async def search_kb(name: Annotated[str, Path(max_length=128)], body: KbSearchIn, runtime: RuntimeDep,
                    kernel: KernelDep, caller: CallerDep) -> SearchResult:
    kbs = _kbs(runtime, caller)

    def run() -> SearchResult:
        embedder = KernelEmbedder.of(kernel, kbs.get(name).embed_model, caller.tenant)
        return search(kbs, name, body.query, embedder, k=body.k, mode=body.mode)

    return await run_in_threadpool(run)
