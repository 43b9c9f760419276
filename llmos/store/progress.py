"""Progress reporting for long store work (imports, conversions), decoupled from any UI."""

from __future__ import annotations


class Progress:
    """Receives progress of one piece of work at a time; ``total`` None means unknown length, counted
    in ``unit`` (bytes, or whole items such as tensors)."""

    def start(self, description: str, total: int | None, unit: str = "bytes") -> None: ...

    def advance(self, amount: int) -> None: ...

    def finish(self) -> None: ...


class NullProgress(Progress):
    pass
