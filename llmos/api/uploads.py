"""Uploaded files streamed to a temporary file, refused (413) as soon as they pass a size limit."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import UploadFile

from llmos.errors import PayloadTooLarge

CHUNK = 1 << 20


async def spool(upload: UploadFile, tmp_dir: Path, *, prefix: str, suffix: str, limit: int, too_large: str,
                param: str | None = None) -> Path:
    """The upload in a temp file under ``tmp_dir`` (removed again if anything fails midway)."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fh = tempfile.NamedTemporaryFile(dir=tmp_dir, prefix=prefix, suffix=suffix, delete=False)
    path, size = Path(fh.name), 0
    try:
        with fh:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(too_large, param=param)
                fh.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
