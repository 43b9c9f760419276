"""The hook through which the feedback loop reports canaries to metrics and alerts.

The loop code registers a *source*, a function returning the canaries being served right now as
``CanaryShare(model, version, share)`` rows (share: 0..1 of the name's traffic going to ``version``),
and reports each canary's end with ``record_canary_outcome(model, version, "promoted" | "rolled_back")``.
With nothing registered the ``llmos_canary_share`` series is simply empty.

    from llmos.feedback.canary_signals import CanaryShare, register_canary_source, record_canary_outcome
    unregister = register_canary_source(lambda: [CanaryShare("support-bot", "v3", 0.2)])
    record_canary_outcome("support-bot", "v3", "rolled_back")   # fires the canary_rolled_back rule

Sources and outcomes are process-wide (the loop runs in the daemon's process); a failing source is
logged and skipped, never breaking a scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from llmos.registry import Registry

log = logging.getLogger("llmos.obs")

Outcome = Literal["promoted", "rolled_back"]
OUTCOMES: tuple[str, ...] = ("promoted", "rolled_back")


@dataclass(frozen=True)
class CanaryShare:
    model: str  # the served name, e.g. "support-bot"
    version: str  # the canary version, e.g. "v3"
    share: float  # 0..1 of the name's traffic it receives


@dataclass(frozen=True)
class CanaryOutcome:
    at: float  # time.monotonic()
    model: str
    version: str
    outcome: str


CanarySource = Callable[[], list[CanaryShare] | list[tuple[str, str, float]]]

_lock = threading.Lock()
_sources: Registry[CanarySource] = Registry("canary source")
_outcomes: deque[CanaryOutcome] = deque(maxlen=10_000)
_totals: Counter[tuple[str, str]] = Counter()


def register_canary_source(fn: CanarySource, name: str | None = None) -> Callable[[], None]:
    """Add ``fn`` to the sources read at every scrape (under ``name``; default: the function and the
    object it is bound to); returns a function that removes it again."""
    key = name or _source_name(fn)
    _sources.register(key, fn)
    return lambda: _sources.unregister(key)


def _source_name(fn: CanarySource) -> str:
    owner = getattr(fn, "__self__", fn)  # a bound method: one source per object, however often it is fetched
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}@{id(owner):x}"


def record_canary_outcome(model: str, version: str, outcome: Outcome) -> None:
    """Count how a canary ended (``promoted`` or ``rolled_back``)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown canary outcome {outcome!r}; use one of {', '.join(OUTCOMES)}")
    with _lock:
        _outcomes.append(CanaryOutcome(time.monotonic(), model, version, outcome))
        _totals[(model, outcome)] += 1


def canary_shares() -> list[CanaryShare]:
    """What every registered source reports now."""
    sources = _sources.values()
    out: list[CanaryShare] = []
    for fn in sources:
        try:
            out.extend(CanaryShare(*row) if not isinstance(row, CanaryShare) else row for row in fn())
        except Exception:  # noqa: BLE001 - a broken source must not break /metrics
            log.exception("canary source %r failed", fn)
    return out


def outcome_totals() -> dict[tuple[str, str], int]:
    """(model, outcome) -> how many canaries ended that way since the process started."""
    with _lock:
        return dict(_totals)


def outcomes_since(t: float, outcome: str = "rolled_back") -> list[CanaryOutcome]:
    with _lock:
        return [o for o in _outcomes if o.at >= t and o.outcome == outcome]
