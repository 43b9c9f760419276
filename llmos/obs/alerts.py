"""The alert evaluator: a daemon thread that judges every rule each ``LLMOS_ALERT_INTERVAL`` seconds.

Each rule moves ok -> pending (the condition holds, for less than ``for``) -> firing -> ok. Entering
firing and leaving it ("resolved") are *notifications*: logged, kept in a bounded history that
``GET /admin/alerts`` (console, ``llmos alerts list``) shows, and POSTed as JSON to the webhook URL
when one is set. Webhook posts run on their own thread so a slow receiver never delays evaluation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

from llmos.obs.measure import Measurement, Sources, measure
from llmos.obs.rules import Rule

log = logging.getLogger("llmos.alerts")
HISTORY = 500  # notifications kept for the console and the CLI
WEBHOOK_TIMEOUT_S = 5.0


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class AlertNotice:
    """One notification: an alert started firing or resolved. This is the webhook's JSON body."""

    id: int
    alert: str
    state: str  # "firing" | "resolved"
    kind: str
    severity: str
    summary: str
    value: float | None
    threshold: float
    detail: str
    at: str  # ISO time of this notification
    started_at: str  # when it started firing
    webhook: str | None = None  # None: no webhook; "delivered" / "failed: ..." once tried


@dataclass
class RuleState:
    rule: Rule
    state: str = "ok"  # ok | pending | firing
    since: float | None = None  # monotonic time it entered pending (or firing)
    started_at: str | None = None  # ISO time it started firing
    last: Measurement | None = None
    evaluated_at: str | None = None

    def to_api(self) -> dict[str, Any]:
        r = self.rule
        return {"name": r.name, "kind": r.kind, "severity": r.severity, "summary": r.summary,
                "threshold": getattr(r, "threshold", None), "window_s": r.window, "for_s": r.for_,
                "state": self.state, "value": self.last.value if self.last else None,
                "detail": self.last.detail if self.last else None, "firing_since": self.started_at,
                "evaluated_at": self.evaluated_at}


@dataclass
class AlertManager:
    rules: list[Rule]
    source: str  # where the rules came from (file path or built-in defaults)
    sources: Sources
    interval_s: float = 15.0
    webhook: str | None = None
    clock: Callable[[], float] = time.monotonic
    _states: list[RuleState] = field(init=False)
    _history: deque[AlertNotice] = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _thread: threading.Thread | None = field(init=False, default=None)
    _posts: ThreadPoolExecutor | None = field(init=False, default=None)
    _next_id: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._states = [RuleState(r) for r in self.rules]
        self._history = deque(maxlen=HISTORY)

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None or not self.rules:
            return
        self._stop.clear()
        if self.webhook:
            self._posts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alert-webhook")
        self._thread = threading.Thread(target=self._loop, name="alerts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)
            self._thread = None
        if self._posts is not None:
            self._posts.shutdown(wait=True, cancel_futures=False)
            self._posts = None

    def _loop(self) -> None:
        while not self._stop.wait(timeout=self.interval_s):
            try:
                self.evaluate()
            except Exception:  # noqa: BLE001 - the evaluator must outlive one bad pass
                log.exception("alert evaluation failed")

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self) -> list[AlertNotice]:
        """Judge every rule once; returns the notifications this pass produced."""
        notices = []
        for st in self._states:
            now = self.clock()
            try:
                m = measure(st.rule, self.sources, now)
            except Exception as exc:  # noqa: BLE001 - e.g. a locked database: judge it next time
                log.warning("alert rule %s could not be evaluated: %s", st.rule.name, exc)
                continue
            with self._lock:
                notice = self._advance(st, m, now)
            if notice is not None:
                notices.append(notice)
                self._deliver(notice)
        return notices

    def _advance(self, st: RuleState, m: Measurement, now: float) -> AlertNotice | None:
        st.last, st.evaluated_at = m, _now_iso()
        threshold = float(getattr(st.rule, "threshold", 0.0))
        if not m.breaches(threshold):
            was_firing = st.state == "firing"
            st.state, st.since = "ok", None
            return self._notice(st, "resolved", threshold) if was_firing else None
        if st.state == "ok":
            st.state, st.since = "pending", now
        if st.state == "pending" and now - (st.since or now) >= st.rule.for_:
            st.state, st.started_at = "firing", _now_iso()
            return self._notice(st, "firing", threshold)
        return None

    def _notice(self, st: RuleState, state: str, threshold: float) -> AlertNotice:
        self._next_id += 1
        m = st.last or Measurement(None, "")
        n = AlertNotice(self._next_id, st.rule.name, state, st.rule.kind, st.rule.severity, st.rule.summary,
                        m.value, threshold, m.detail, _now_iso(), st.started_at or _now_iso(),
                        webhook="pending" if self.webhook else None)
        self._history.append(n)
        return n

    # -- delivery -------------------------------------------------------------------------------
    def _deliver(self, n: AlertNotice) -> None:
        level = logging.WARNING if n.state == "firing" else logging.INFO
        log.log(level, "alert %s %s (%s): %s", n.alert, n.state, n.severity, n.detail)
        if self._posts is not None:
            self._posts.submit(self._post, n)

    def _post(self, n: AlertNotice) -> None:
        body = asdict(n)
        body.pop("webhook")
        try:
            r = httpx.post(self.webhook or "", json=body, timeout=WEBHOOK_TIMEOUT_S)
            outcome = "delivered" if r.status_code < 400 else f"failed: HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            outcome = f"failed: {exc.__class__.__name__}: {exc}"
        if outcome != "delivered":
            log.warning("alert %s: webhook %s", n.alert, outcome)
        with self._lock:
            n.webhook = outcome

    # -- views ----------------------------------------------------------------------------------
    def firing(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(s.rule.name, s.rule.severity) for s in self._states if s.state == "firing"]

    def view(self, limit: int = 100) -> dict[str, Any]:
        """What ``GET /admin/alerts`` returns: every rule's state and the newest notifications."""
        with self._lock:
            rules = [s.to_api() for s in self._states]
            history = [asdict(n) for n in list(self._history)[::-1][:limit]]
        return {"source": self.source, "interval_s": self.interval_s, "webhook": bool(self.webhook),
                "firing": [r for r in rules if r["state"] == "firing"], "rules": rules, "history": history}
