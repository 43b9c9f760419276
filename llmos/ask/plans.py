"""Plans waiting for confirmation: held in the daemon's memory for ``TTL_S``, each readable only by the
key (and tenant) that asked for it, and run at most once (a restart forgets them: ask again)."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from llmos.ask.types import AskOut
from llmos.errors import NotFound

TTL_S = 900.0
MAX_PLANS = 1000


@dataclass(frozen=True)
class Held:
    plan: AskOut
    tenant: str
    key_id: str | None
    until: float


class Plans:
    def __init__(self, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self._clock = clock
        self._held: dict[str, Held] = {}
        self._lock = threading.Lock()

    def put(self, plan: AskOut, tenant: str, key_id: str | None) -> str:
        plan_id = "plan_" + secrets.token_hex(12)
        with self._lock:
            self._expire()
            if len(self._held) >= MAX_PLANS:  # the oldest goes first
                self._held.pop(next(iter(self._held)))
            self._held[plan_id] = Held(plan.model_copy(update={"id": plan_id}), tenant, key_id,
                                       self._clock() + TTL_S)
        return plan_id

    def take(self, plan_id: str, tenant: str, key_id: str | None) -> AskOut:
        """The plan, removed (it runs once); another key's or tenant's plan is as absent as an unknown one."""
        with self._lock:
            self._expire()
            held = self._held.get(plan_id)
            if held is None or held.tenant != tenant or held.key_id != key_id:
                raise NotFound(f"no plan {plan_id!r} waits for this key (plans are kept {int(TTL_S // 60)} minutes "
                               "and run once); ask again", param="plan_id")
            del self._held[plan_id]
            return held.plan

    def _expire(self) -> None:
        now = self._clock()
        for plan_id in [p for p, h in self._held.items() if h.until <= now]:
            del self._held[plan_id]
