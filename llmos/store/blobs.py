"""Content-addressed blob storage.

A blob lives at ``blobs/sha256/<hex>``. It is written to a temp file in the same file system,
hashed while written, fsync'd, and renamed into place, so a reader never sees a partial blob and a
crash leaves at most a temp file (removed by ``clean_tmp`` at the next start). Reads verify the hash.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from llmos.errors import IntegrityError, NotFound, StoreFull

Progress = Callable[[int], None]  # called with the number of bytes just processed
CHUNK = 4 << 20


def digest_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()


class BlobStore:
    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root / "sha256"
        self.tmp = tmp
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        algo, _, hexdigest = digest.partition(":")
        if algo != "sha256" or len(hexdigest) != 64 or not all(c in "0123456789abcdef" for c in hexdigest):
            raise NotFound(f"not a blob digest: {digest!r}")
        return self.root / hexdigest

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put_file(self, src: Path, progress: Progress | None = None) -> tuple[str, int]:
        """Copy ``src`` into the store; returns (digest, size). Idempotent for equal content."""
        with open(src, "rb") as fh:
            return self._put_stream(iter(lambda: fh.read(CHUNK), b""), progress)

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        return self._put_stream(iter([data]), None)

    def _put_stream(self, chunks: Iterator[bytes], progress: Progress | None) -> tuple[str, int]:
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="blob-", suffix=".partial")
        tmp = Path(tmp_name)
        try:
            digest, size = _write_hashed(fd, chunks, progress)
            final = self.path(digest)
            if final.exists():
                tmp.unlink()
            else:
                os.chmod(tmp, 0o444)
                os.replace(tmp, final)
                _fsync_dir(self.root)
            return digest, size
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise StoreFull(f"no space left while writing to the store ({exc.strerror}); nothing was kept") from None
            raise

    def verify(self, digest: str) -> bool:
        path = self.path(digest)
        return path.is_file() and digest_of(path) == digest

    def open_verified(self, digest: str) -> Path:
        """The blob's path after checking its content still matches its name."""
        path = self.path(digest)
        if not path.is_file():
            raise IntegrityError(f"blob {digest} is missing from the store; run `llmos doctor`")
        if digest_of(path) != digest:
            raise IntegrityError(f"blob {digest} is corrupt (its content no longer matches its hash); "
                                 "re-import the model or run `llmos doctor`")
        return path

    def digests(self) -> list[str]:
        return sorted("sha256:" + p.name for p in self.root.iterdir() if p.is_file())

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def clean_tmp(self) -> int:
        """Remove leftovers of interrupted writes; returns how many were removed."""
        count = 0
        for entry in self.tmp.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            count += 1
        return count


def _write_hashed(fd: int, chunks: Iterator[bytes], progress: Progress | None) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with os.fdopen(fd, "wb") as out:
        for chunk in chunks:
            out.write(chunk)
            h.update(chunk)
            size += len(chunk)
            if progress:
                progress(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    return "sha256:" + h.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
