"""The CLI's tables: one plain look, sized for an 80-column terminal.

A header is never cut: each column is at least as wide as its header. Columns named in ``wrap`` (names,
details, metrics) wrap when the terminal is narrow, breaking inside a word only when one is longer than
the column; every other column keeps its cells on one line. Cells say things briefly (``517 MiB``,
``67.3k``, ``5m ago``); ``show`` commands and ``--json`` give the full values.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from rich import box
from rich.cells import cell_len
from rich.table import Table


def new_table(*headers: str, wrap: Iterable[str] = (), title: str | None = None) -> Table:
    """A table with these column headers; the ones in ``wrap`` may wrap, the others never do."""
    wrapping = set(wrap)
    if unknown := wrapping - set(headers):
        raise ValueError(f"wrap names columns the table does not have: {sorted(unknown)}")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), title=title)
    for header in headers:
        if header in wrapping:
            table.add_column(header, min_width=cell_len(header), overflow="fold")
        else:
            table.add_column(header, min_width=cell_len(header), no_wrap=True)
    return table


def size(n: float) -> str:
    """Bytes in three significant figures at most: ``87.4 MiB``, ``517 MiB``, ``1.2 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1000 or unit == "TiB":
            break
        n /= 1024
    if unit == "B":
        return f"{n:.0f} B"
    return f"{n:.1f} {unit}" if abs(n) < 100 else f"{n:.0f} {unit}"


def count(n: int) -> str:
    """``67,349``, then ``123k``, ``1.2M``."""
    if abs(n) < 100_000:
        return f"{n:,}"
    return f"{n / 1000:.0f}k" if abs(n) < 1_000_000 else f"{n / 1e6:.1f}M"


def ago(when: datetime | str | None, now: datetime | None = None) -> str:
    """How long ago: ``45s ago``, ``5m ago``, ``3h ago``, ``2d ago``, ``4mo ago``, ``2y ago``.
    A naive time, as the database returns them, is UTC."""
    if when is None or when == "":
        return "-"
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = max(0, int(((now or datetime.now(timezone.utc)) - when).total_seconds()))
    for limit, unit, div in ((60, "s", 1), (3600, "m", 60), (86400, "h", 3600), (60 * 86400, "d", 86400),
                             (730 * 86400, "mo", 30 * 86400)):
        if seconds < limit:
            return f"{seconds // div}{unit} ago"
    return f"{seconds // (365 * 86400)}y ago"


def short_id(digest: str) -> str:
    """The first 12 hex digits of a ``sha256:...`` digest: enough to tell models apart."""
    return digest.split(":", 1)[-1][:12]


def duration(seconds: float | None) -> str:
    """``45s``, ``4m58s``, ``1h02m``; ``-`` for none."""
    if seconds is None:
        return "-"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"
