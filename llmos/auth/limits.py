"""Per-key rate limits (a token bucket of requests per second) and per-day token quotas.

Both live in the daemon's memory. A quota's usage for today is first read from the request log (every
response writes its token counts there with its key id), so a restart does not hand out a fresh quota.
Days are UTC days; the Retry-After of an exhausted quota is the time to the next UTC midnight.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from llmos.db.engine import Database
from llmos.db.tables import RequestLog

Clock = Callable[[], float]


@dataclass
class TokenBucket:
    """``rate`` requests per second with bursts of up to ``burst`` (at least one request)."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """0.0 when a request may go now, else the seconds until one may."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def _day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def seconds_to_midnight(now: datetime) -> float:
    return max(1.0, (_day_start(now) + timedelta(days=1) - now).total_seconds())


class Limiter:
    """The daemon's rate buckets and quota counters, keyed by API key id; thread-safe."""

    def __init__(self, db: Database, *, clock: Clock = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.db = db
        self._clock, self._wall = clock, wall
        self._buckets: dict[str, TokenBucket] = {}
        self._used: dict[str, tuple[datetime, int]] = {}
        self._lock = threading.Lock()

    def admit(self, key_id: str, rate: float | None) -> float:
        """0.0 if the key may send a request now, else the seconds to wait (rate limit hit)."""
        if not rate:
            return 0.0
        now = self._clock()
        with self._lock:
            b = self._buckets.get(key_id)
            if b is None or b.rate != rate:
                burst = max(1.0, rate)
                b = self._buckets[key_id] = TokenBucket(rate, burst, burst, now)
            return b.take(now)

    def used_today(self, key_id: str) -> int:
        day = _day_start(self._wall())
        with self._lock:
            held = self._used.get(key_id)
            if held is not None and held[0] == day:
                return held[1]
        used = self._logged_since(key_id, day)
        with self._lock:
            held = self._used.get(key_id)
            if held is None or held[0] != day:  # another thread may have loaded it meanwhile
                self._used[key_id] = (day, used)
            return self._used[key_id][1]

    def charge(self, key_id: str, tokens: int) -> int:
        """Add ``tokens`` to today's usage; returns the new total."""
        self.used_today(key_id)
        with self._lock:
            day, used = self._used[key_id]
            self._used[key_id] = (day, used + max(0, int(tokens)))
            return used + max(0, int(tokens))

    def retry_after_quota(self) -> float:
        return seconds_to_midnight(self._wall())

    def _logged_since(self, key_id: str, day: datetime) -> int:
        total = func.coalesce(func.sum(RequestLog.prompt_tokens + RequestLog.completion_tokens), 0)
        with self.db.session() as s:
            return int(s.scalar(select(total).where(RequestLog.key_id == key_id, RequestLog.created_at >= day)) or 0)

    def quota(self, key_id: str, limit: int | None) -> "Quota | None":
        return None if limit is None else Quota(self, key_id, limit)


@dataclass
class Quota:
    """One request's view of its key's daily token quota: charge as tokens are spent, settle at the end."""

    limiter: Limiter
    key_id: str
    limit: int
    charged: int = field(default=0)

    def remaining(self) -> int:
        return self.limit - self.limiter.used_today(self.key_id)

    def exhausted(self) -> bool:
        return self.remaining() <= 0

    def charge(self, tokens: int) -> bool:
        """Spend ``tokens``; False once the quota is used up (the caller stops generating)."""
        self.charged += max(0, tokens)
        return self.limiter.charge(self.key_id, tokens) < self.limit

    def settle(self, total: int) -> None:
        """Make this request's charge equal ``total`` (its prompt + completion tokens)."""
        if total > self.charged:
            self.charge(total - self.charged)

    def retry_after(self) -> float:
        return math.ceil(self.limiter.retry_after_quota())
