"""Remembered resolutions: what a model name resolved to, kept while the registry stays unchanged.

Resolving a name reads the database three or four times (the tenant's namespace, ``latest`` pinned to
its version, the base, the adapter); under a burst of requests those reads queue behind each other at
the front door. A remembered resolution is stamped with the registry's clock (``Registry.clock``: one
number that every write of a name or manifest, by any process, moves on), and it is used only while
the clock still reads the same: a new version, a re-pointed ``latest`` or a removed model is seen by
the very next request, exactly as without the cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, Hashable, TypeVar

T = TypeVar("T")
MAX_ENTRIES = 1024  # distinct (name, task, tenant, needs) remembered; the least recently used goes first


class ClockedCache(Generic[T]):
    """``get(key, clock)`` -> the value ``put`` with the same clock, else None. Thread-safe."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[int, T]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, clock: int) -> T | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != clock:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: Hashable, clock: int, value: T) -> None:
        """Remember ``value`` as of ``clock``: the clock read *before* ``value`` was computed, so a
        write that landed meanwhile makes the entry stale at the next read instead of hiding it."""
        with self._lock:
            self._entries[key] = (clock, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
