"""One small registry for every "name -> thing" table an extension can add to (job kinds, engine
backends, queue policies, training methods and tasks, built-in models, canary sources).

One rule for every one of them:

* registering the same value under a name it already has is a no-op (a module imported twice, a
  test registering its fixture kind in each module);
* a different value under a taken name is a ``Conflict``, unless the caller says ``replace=True``;
* asking for an unknown name raises ``InvalidInput`` (or the error class the registry was made with,
  e.g. ``ConfigError`` where the name comes from settings) listing the names that are known.

Names keep their registration order (built-in models are registered in the order they are listed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from llmos.errors import Conflict, InvalidInput, LlmosError

T = TypeVar("T")


class Registry(Generic[T]):
    """A thread-safe, ordered name -> value table with one duplicate rule (see the module docstring).

    ``what`` names the things in messages ("job kind", "queue policy"; ``plural`` when adding an "s"
    will not do); ``param`` is the request field
    an unknown name came from (it travels in the error's body); ``missing`` is the error raised for an
    unknown name."""

    def __init__(self, what: str, *, plural: str | None = None, param: str | None = None,
                 missing: type[LlmosError] = InvalidInput) -> None:
        self.what = what
        self.plural = plural or f"{what}s"
        self.param = param
        self.missing = missing
        self._items: dict[str, T] = {}
        self._lock = threading.Lock()

    def register(self, name: str, value: T, *, replace: bool = False) -> T:
        """Add ``value`` under ``name``; returns it (so a decorator or an assignment can use it)."""
        with self._lock:
            if name in self._items and self._items[name] != value and not replace:
                raise Conflict(f"{self.what} {name!r} is already registered as {self._items[name]!r}; "
                               "pass replace=True to replace it")
            self._items[name] = value
        return value

    def unregister(self, name: str) -> None:
        """Remove ``name`` (nothing happens when it is not registered)."""
        with self._lock:
            self._items.pop(name, None)

    def get(self, name: str) -> T:
        with self._lock:
            value = self._items.get(name)
            known = sorted(self._items)
        if value is None:
            details = {"param": self.param} if self.param else {}
            raise self.missing(f"unknown {self.what} {name!r}; known {self.plural}: {', '.join(known) or 'none registered'}",
                               **details)
        return value

    def find(self, name: str) -> T | None:
        with self._lock:
            return self._items.get(name)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        with self._lock:
            return sorted(self._items)

    def values(self) -> list[T]:
        """The registered values, in registration order."""
        with self._lock:
            return list(self._items.values())

    def items(self) -> dict[str, T]:
        with self._lock:
            return dict(self._items)

    def select(self, keep: Callable[[T], bool]) -> list[str]:
        """The sorted names whose value passes ``keep``."""
        with self._lock:
            return sorted(n for n, v in self._items.items() if keep(v))

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
