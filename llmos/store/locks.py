"""Inter-process file locks (flock): they vanish with the process that held them, even on kill -9."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from llmos.errors import Conflict


class FileLock:
    def __init__(self, path: Path, *, exclusive: bool = True, wait: bool = True, timeout: float = 3600.0) -> None:
        self.path = path
        self.exclusive = exclusive
        self.wait = wait
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not self.wait or time.monotonic() > deadline:
                    os.close(fd)
                    raise Conflict(f"{self.path.stem} is busy: another llmos process holds it; try again "
                                   "when it finishes") from None
                time.sleep(0.1)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
