"""Progress reporting for long store work (imports, conversions), decoupled from any UI."""

from __future__ import annotations


class Progress:
    """Receives progress of one piece of work at a time; ``total`` None means unknown length."""

    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, amount: int) -> None: ...

    def finish(self) -> None: ...


class NullProgress(Progress):
    pass
