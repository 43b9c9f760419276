"""OpenAI's files API: ``/v1/files`` upload (JSONL, purpose ``fine-tune`` or ``batch``), list, show,
content, delete. Every route works inside the caller's tenant: another tenant's file id answers 404,
exactly like an unknown one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from llmos.api.uploads import spool
from llmos.api.deps import Caller, get_caller, get_runtime
from llmos.errors import InvalidInput
from llmos.runtime import Runtime
from llmos.store.files import FileInfo, Files

router = APIRouter(prefix="/v1/files", tags=["files"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerDep = Annotated[Caller, Depends(get_caller)]


class FileObject(BaseModel):
    """OpenAI's ``file`` object."""

    model_config = ConfigDict(extra="forbid")

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"  # a file is checked whole before it is stored
    status_details: str | None = None
    expires_at: int | None = None

    @classmethod
    def of(cls, info: FileInfo) -> FileObject:
        return cls(id=info.id, bytes=info.bytes, created_at=int(info.created_at.timestamp()),
                   filename=info.filename, purpose=info.purpose)


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


def files_of(runtime: Runtime, tenant: str) -> Files:
    return Files(runtime.db, runtime.store.blobs, runtime.settings.locks_dir, tenant)


@router.post("", response_model=FileObject)
async def upload_file(request: Request, runtime: RuntimeDep, caller: CallerDep,
                      file: Annotated[UploadFile, File(description="a JSONL file: one JSON object per line")],
                      purpose: Annotated[str, Form(description="fine-tune or batch")]) -> FileObject:
    unknown = sorted(set((await request.form()).keys()) - {"file", "purpose"})  # e.g. expires_after[anchor]
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown parameter; llmos does not support it", param=unknown[0],
                           code="unsupported_parameter")
    filename = Path(file.filename or "upload.jsonl").name[:260]
    limit = runtime.settings.max_file_bytes
    path = await _save_upload(file, runtime.settings.tmp_dir, limit)
    try:
        info = await run_in_threadpool(files_of(runtime, caller.tenant).create, path, filename, purpose,
                                       max_bytes=limit)
    finally:
        path.unlink(missing_ok=True)
    return FileObject.of(info)


async def _save_upload(upload: UploadFile, tmp_dir: Path, limit: int) -> Path:
    """Stream the upload to a temp file, refusing it (413) as soon as it passes ``limit``."""
    return await spool(upload, tmp_dir, prefix="file-", suffix=".jsonl", limit=limit,
                       too_large=f"the file is larger than {limit:,} bytes (LLMOS_MAX_FILE_BYTES)", param="file")


@router.get("")
def list_files(runtime: RuntimeDep, caller: CallerDep,
               purpose: Annotated[Literal["fine-tune", "batch", "batch_output"] | None, Query()] = None,
               after: Annotated[str | None, Query(max_length=64)] = None,
               limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
               order: Annotated[Literal["asc", "desc"], Query()] = "desc") -> FileList:
    page = files_of(runtime, caller.tenant).list(purpose=purpose, after=after, limit=limit, order=order)
    data = [FileObject.of(f) for f in page.data]
    return FileList(data=data, has_more=page.has_more, first_id=data[0].id if data else None,
                    last_id=data[-1].id if data else None)


@router.get("/{file_id}")
def get_file(file_id: str, runtime: RuntimeDep, caller: CallerDep) -> FileObject:
    return FileObject.of(files_of(runtime, caller.tenant).get(file_id))


@router.get("/{file_id}/content")
def file_content(file_id: str, runtime: RuntimeDep, caller: CallerDep) -> FileResponse:
    files = files_of(runtime, caller.tenant)
    info = files.get(file_id)
    return FileResponse(files.path(file_id), media_type="application/jsonl", filename=info.filename)


@router.delete("/{file_id}")
def delete_file(file_id: str, runtime: RuntimeDep, caller: CallerDep) -> FileDeleted:
    return FileDeleted(id=files_of(runtime, caller.tenant).delete(file_id).id)
