"""Uploaded files (OpenAI's files API): JSONL documents kept for fine-tuning and batches, per tenant.

A file's bytes are a blob in the content-addressed store (two uploads of the same bytes share it);
its ``files`` row says which tenant owns it, its name, purpose, size and line count. Every query is
filtered by tenant, so another tenant's file id answers exactly like an unknown one. Deleting a file
drops its row; ``llmos gc`` frees the blob once nothing else (another file, a dataset) holds it.

An upload is checked whole before anything is stored: JSONL only, every non-blank line one JSON
object, the first bad line named with its number.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import select

from llmos.db.engine import Database
from llmos.db.tables import StoredFile
from llmos.errors import InvalidInput, NotFound, PayloadTooLarge
from llmos.store.blobs import BlobStore
from llmos.store.locks import FileLock

PURPOSES: tuple[str, ...] = ("fine-tune", "batch")  # what a person may upload
OUTPUT_PURPOSE = "batch_output"  # a batch's output and error files: written by llmos, read like any file


class FileInfo(BaseModel):
    """One stored file as the registry returns it."""

    id: str
    tenant: str
    filename: str
    purpose: str
    bytes: int
    lines: int
    digest: str
    created_at: datetime


class FilePage(BaseModel):
    data: list[FileInfo]
    has_more: bool


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


class Files:
    """The files one tenant sees: every read and write is filtered by ``tenant``."""

    def __init__(self, db: Database, blobs: BlobStore, locks: Path, tenant: str = "default") -> None:
        self.db = db
        self.blobs = blobs
        self.locks = locks
        self.tenant = tenant

    def create(self, path: Path, filename: str, purpose: str, *, max_bytes: int) -> FileInfo:
        """Check ``path`` (size, JSONL) and store it as a new file of this tenant."""
        if purpose not in PURPOSES:
            raise InvalidInput(f"purpose {purpose!r} is not supported; use one of: {', '.join(PURPOSES)}",
                               param="purpose")
        return self._create(path, filename, purpose, max_bytes=max_bytes, file_id=new_file_id())

    def create_output(self, path: Path, filename: str, file_id: str) -> FileInfo:
        """Store a JSONL file llmos wrote (purpose ``batch_output``) under ``file_id``; the file already
        stored under that id when there is one (a batch finalized again after a crash makes no second file)."""
        try:
            return self.get(file_id)
        except NotFound:
            return self._create(path, filename, OUTPUT_PURPOSE, max_bytes=path.stat().st_size, file_id=file_id)

    def _create(self, path: Path, filename: str, purpose: str, *, max_bytes: int, file_id: str) -> FileInfo:
        size = path.stat().st_size
        if size > max_bytes:
            raise PayloadTooLarge(f"{filename} is {size:,} bytes; files may hold at most {max_bytes:,} bytes "
                                  "(LLMOS_MAX_FILE_BYTES)", param="file")
        lines = check_jsonl(path, filename)
        with FileLock(self.locks / "store.lock", exclusive=False):  # gc cannot collect the blob mid-write
            digest, _ = self.blobs.put_file(path)
            with self.db.session() as s:
                s.add(StoredFile(id=file_id, tenant=self.tenant, filename=filename, purpose=purpose, bytes=size,
                                 lines=lines, digest=digest))
        return self.get(file_id)

    def get(self, file_id: str) -> FileInfo:
        with self.db.session() as s:
            row = s.get(StoredFile, file_id)
            if row is None or row.tenant != self.tenant:
                raise NotFound(f"no file {file_id!r}", param="file_id")
            return _info(row)

    def list(self, *, purpose: str | None = None, after: str | None = None, limit: int = 10_000,
             order: Literal["asc", "desc"] = "desc") -> FilePage:
        """This tenant's files by creation time; ``after`` is the id the previous page ended with."""
        newest_first = order == "desc"
        q = select(StoredFile).where(StoredFile.tenant == self.tenant)
        if purpose is not None:
            q = q.where(StoredFile.purpose == purpose)
        if after is not None:
            mark = self.get(after)
            newer = StoredFile.created_at > mark.created_at
            older = StoredFile.created_at < mark.created_at
            same = (StoredFile.created_at == mark.created_at) & (StoredFile.id < mark.id if newest_first
                                                                 else StoredFile.id > mark.id)
            q = q.where((older if newest_first else newer) | same)
        keys = (StoredFile.created_at.desc(), StoredFile.id.desc()) if newest_first else \
            (StoredFile.created_at, StoredFile.id)
        with self.db.session() as s:
            rows = s.scalars(q.order_by(*keys).limit(limit + 1)).all()
            found = [_info(r) for r in rows]
        return FilePage(data=found[:limit], has_more=len(found) > limit)

    def path(self, file_id: str) -> Path:
        """The file's bytes, verified against its digest."""
        return self.blobs.open_verified(self.get(file_id).digest)

    def delete(self, file_id: str) -> FileInfo:
        info = self.get(file_id)
        with self.db.session() as s:
            row = s.get(StoredFile, file_id)
            if row is not None and row.tenant == self.tenant:
                s.delete(row)
        return info


def check_jsonl(path: Path, filename: str) -> int:
    """The number of JSON objects in ``path``; InvalidInput naming the first line that is not one."""
    count = 0
    for number, raw in _lines(path):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(f"{filename}: line {number} is not UTF-8 text", param="file") from None
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{filename}: line {number} is not valid JSON ({exc.msg} at column {exc.colno}); "
                               "a JSONL file holds one JSON object per line", param="file") from None
        except RecursionError:
            raise InvalidInput(f"{filename}: line {number} nests JSON too deeply", param="file") from None
        if not isinstance(value, dict):
            raise InvalidInput(f"{filename}: line {number} is a JSON {type(value).__name__}, not an object; a "
                               "JSONL file holds one JSON object per line", param="file")
        count += 1
    if count == 0:
        raise InvalidInput(f"{filename} holds no JSON lines", param="file")
    return count


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            yield number, raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw


def _info(row: StoredFile) -> FileInfo:
    return FileInfo(id=row.id, tenant=row.tenant, filename=row.filename, purpose=row.purpose, bytes=row.bytes,
                    lines=row.lines, digest=row.digest, created_at=row.created_at)
