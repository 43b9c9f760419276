"""Queue policies: in which order waiting requests are admitted to a batch.

A policy only orders; it never decides how many run (that is the scheduler's batch size) and never
rejects (that is the scheduler's ``max_queue``). Every policy, built-in or not, is registered with
``register_policy`` and built by name with ``make_policy``, so settings can name one
(``LLMOS_POLICY=fair``) and a plugin can add one without touching the scheduler.

Policies are not thread-safe on their own: the scheduler serialises access to the one it owns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Container, Iterator

from llmos.errors import ConfigError
from llmos.registry import Registry
from llmos.kernel.request import Request


class QueuePolicy(ABC):
    """An ordered set of waiting requests, keyed by ``Request.id``.

    Contract:

    - ``push(req)`` adds a request; pushing an id that is already queued raises ``ValueError``.
    - ``pop()`` removes and returns the request to admit next, or ``None`` when empty.
    - ``remove(req_id)`` takes out a request wherever it is (cancellation) and returns it, or
      ``None`` when no such id is queued.
    - ``iter(policy)`` yields the queued requests in the order ``pop`` would return them if nothing
      else were pushed, without changing anything: queue positions for ``llmos ps``.
    """

    name: str = ""

    @abstractmethod
    def push(self, req: Request) -> None: ...

    @abstractmethod
    def pop(self) -> Request | None: ...

    @abstractmethod
    def remove(self, req_id: str) -> Request | None: ...

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __iter__(self) -> Iterator[Request]: ...

    def __contains__(self, req_id: object) -> bool:
        return any(r.id == req_id for r in self)

    def peek(self) -> Request | None:
        """The request ``pop`` would return, left in place."""
        return next(iter(self), None)


def _reject_duplicate(queued_ids: Container[str], req: Request) -> None:
    if req.id in queued_ids:
        raise ValueError(f"request {req.id} is already queued")


class FcfsPolicy(QueuePolicy):
    """First come, first served: strict arrival (push) order."""

    name = "fcfs"

    def __init__(self) -> None:
        # An OrderedDict keeps push order and still removes a cancelled id in O(1).
        self._queue: OrderedDict[str, Request] = OrderedDict()

    def push(self, req: Request) -> None:
        _reject_duplicate(self._queue, req)
        self._queue[req.id] = req

    def pop(self) -> Request | None:
        return self._queue.popitem(last=False)[1] if self._queue else None

    def remove(self, req_id: str) -> Request | None:
        return self._queue.pop(req_id, None)

    def __len__(self) -> int:
        return len(self._queue)

    def __iter__(self) -> Iterator[Request]:
        return iter(list(self._queue.values()))

    def __contains__(self, req_id: object) -> bool:
        return req_id in self._queue


class PriorityPolicy(QueuePolicy):
    """Higher ``Request.priority`` first; first come, first served within one priority.

    Strict priority: a steady stream of high-priority requests starves lower ones indefinitely.
    That is the point of the policy (interactive traffic over batch traffic); a tenant that must
    not starve belongs under ``fair`` instead.
    """

    name = "priority"

    def __init__(self) -> None:
        # One FIFO per priority level: there are few distinct levels, so finding the highest by
        # scanning the keys is cheaper and simpler than a heap with lazy deletion.
        self._levels: dict[int, OrderedDict[str, Request]] = {}
        self._index: dict[str, int] = {}

    def push(self, req: Request) -> None:
        _reject_duplicate(self._index, req)
        self._levels.setdefault(req.priority, OrderedDict())[req.id] = req
        self._index[req.id] = req.priority

    def pop(self) -> Request | None:
        if not self._levels:
            return None
        top = max(self._levels)
        req = self._levels[top].popitem(last=False)[1]
        self._forget(req.id, top)
        return req

    def remove(self, req_id: str) -> Request | None:
        level = self._index.get(req_id)
        if level is None:
            return None
        req = self._levels[level].pop(req_id)
        self._forget(req_id, level)
        return req

    def _forget(self, req_id: str, level: int) -> None:
        del self._index[req_id]
        if not self._levels[level]:
            del self._levels[level]

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[Request]:
        ordered = [r for p in sorted(self._levels, reverse=True) for r in self._levels[p].values()]
        return iter(ordered)

    def __contains__(self, req_id: object) -> bool:
        return req_id in self._index


class FairPolicy(QueuePolicy):
    """Per-tenant fair share: round-robin across ``Request.tenant``, FIFO within a tenant.

    Each ``pop`` serves the tenant at the head of the rotation, then moves it to the back, so a
    tenant with one queued request waits behind at most one request of every other tenant however
    many those have queued. A tenant joins the rotation at the back when its first request arrives
    and leaves it when its queue empties, so coming and going buys no extra turns.

    Fairness is counted in admissions, not tokens: a tenant sending long generations gets the
    same number of turns as one sending short ones.
    """

    name = "fair"

    def __init__(self) -> None:
        # Insertion order of _tenants is the rotation: the first key is served next.
        self._tenants: OrderedDict[str, OrderedDict[str, Request]] = OrderedDict()
        self._index: dict[str, str] = {}

    def push(self, req: Request) -> None:
        _reject_duplicate(self._index, req)
        queue = self._tenants.get(req.tenant)
        if queue is None:
            queue = self._tenants[req.tenant] = OrderedDict()
        queue[req.id] = req
        self._index[req.id] = req.tenant

    def pop(self) -> Request | None:
        if not self._tenants:
            return None
        tenant, queue = next(iter(self._tenants.items()))
        req = queue.popitem(last=False)[1]
        del self._index[req.id]
        if queue:
            self._tenants.move_to_end(tenant)
        else:
            del self._tenants[tenant]
        return req

    def remove(self, req_id: str) -> Request | None:
        tenant = self._index.pop(req_id, None)
        if tenant is None:
            return None
        queue = self._tenants[tenant]
        req = queue.pop(req_id)
        if not queue:
            del self._tenants[tenant]  # an emptied tenant keeps no place in the rotation
        return req

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[Request]:
        # Replays the rotation: round k yields the k-th request of every tenant still holding one.
        queues = [list(q.values()) for q in self._tenants.values()]
        depth = max((len(q) for q in queues), default=0)
        return iter([q[k] for k in range(depth) for q in queues if k < len(q)])

    def __contains__(self, req_id: object) -> bool:
        return req_id in self._index

    def tenants(self) -> dict[str, int]:
        """Queued requests per tenant, in rotation order (next served first)."""
        return {t: len(q) for t, q in self._tenants.items()}


# The policy name comes from settings (LLMOS_QUEUE_POLICY): an unknown one is a configuration error.
POLICIES: Registry[type[QueuePolicy]] = Registry("queue policy", plural="policies", missing=ConfigError)


def register_policy(name: str, cls: type[QueuePolicy], *, replace: bool = False) -> None:
    """Make ``cls`` available to ``make_policy(name)``."""
    if not (isinstance(cls, type) and issubclass(cls, QueuePolicy)):
        raise TypeError(f"{cls!r} is not a QueuePolicy subclass")
    POLICIES.register(name, cls, replace=replace)


def make_policy(name: str) -> QueuePolicy:
    """A fresh, empty policy of the registered kind ``name``."""
    return POLICIES.get(name)()


def policy_names() -> list[str]:
    return POLICIES.names()


register_policy("fcfs", FcfsPolicy)
register_policy("priority", PriorityPolicy)
register_policy("fair", FairPolicy)
