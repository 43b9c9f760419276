"""/metrics after real traffic through the API (fake engines over the real store): the series move."""

from __future__ import annotations

import threading

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete
from starlette.responses import JSONResponse

from llmos.db.tables import Feedback, RequestLog
from llmos.engines.base import FakeEngine
from llmos.feedback.canary_signals import CanaryShare, record_canary_outcome, register_canary_source
from llmos.obs.metrics import Metrics, MetricsMiddleware
from llmos.runtime import Runtime
from tests.obs.conftest import scrape, value
from tests.waiting import BACKSTOP_S, wait_until

SMOL = "smollm2-135m-instruct"
REF = f"{SMOL}:latest"
CHAT = {"model": SMOL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}


def test_counters_and_histograms_move_with_traffic(make_app) -> None:  # type: ignore[no-untyped-def]
    client = make_app()
    before = scrape(client)
    for _ in range(2):
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    streamed = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert streamed.status_code == 200 and "[DONE]" in streamed.text
    assert client.post("/v1/chat/completions", json={**CHAT, "model": "nope"}).status_code == 404
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("llmos_requests_total", route="chat", model=REF, status="200") == 3
    assert moved("llmos_request_latency_seconds_count", route="chat", model=REF) == 3
    assert moved("llmos_time_to_first_token_seconds_count", route="chat", model=REF) == 3
    assert moved("llmos_generated_tokens_total", model=REF) == 15
    assert moved("llmos_prompt_tokens_total", model=REF) > 0
    # SlowFakeEngine sleeps 20 ms a step: 5 tokens take at least 0.1 s end to end, the first at least 0.02 s
    # (lower bounds the engine itself sets: a slower or busier machine only adds to them)
    assert moved("llmos_request_latency_seconds_sum", route="chat", model=REF) >= 3 * 0.1
    assert moved("llmos_time_to_first_token_seconds_sum", route="chat", model=REF) >= 3 * 0.02
    assert moved("llmos_time_to_first_token_seconds_bucket", route="chat", model=REF, le="0.01") == 0
    http = dict(method="POST", route="/v1/chat/completions")
    assert moved("llmos_http_requests_total", **http, status="200") == 3
    assert moved("llmos_http_requests_total", **http, status="404") == 1
    assert value(after, "llmos_http_requests_total", method="GET", route="/metrics", status="200") >= 1
    # the model stayed loaded: its measured footprint and the budget's use
    assert value(after, "llmos_model_loaded", model=REF, engine="hf") == 1
    assert value(after, "llmos_model_memory_bytes", model=REF, engine="hf") == FakeEngine(REF).footprint()
    assert value(after, "llmos_memory_used_bytes") >= FakeEngine(REF).footprint()
    assert value(after, "llmos_memory_budget_bytes") == client.kernel.resources.budget_bytes
    assert value(after, "llmos_queue_capacity", model=REF, engine="hf") == client.kernel.settings.max_queue


class GatedEngine(FakeEngine):
    """Prefill blocks until the test opens the gate, so requests pile up in the queue."""

    gate = threading.Event()

    def prefill(self, seqs):  # type: ignore[no-untyped-def]
        assert self.gate.wait(BACKSTOP_S), "the test never opened the gate"
        return super().prefill(seqs)


def test_queue_depth_and_rejections(make_app) -> None:  # type: ignore[no-untyped-def]
    GatedEngine.gate.clear()
    client = make_app(engine_factory=lambda ref: GatedEngine(ref), max_batch=1, max_queue=1)
    results: list[int] = []

    def send() -> None:
        results.append(client.post("/v1/chat/completions", json=CHAT).status_code)

    def wait_for_gauge(name: str, want: float) -> None:
        wait_until(lambda: value(scrape(client), name, model=REF, engine="hf") == want, f"{name} = {want}",
                   ended=lambda: None if all(t.is_alive() for t in threads if t.ident) else f"a request ended: {results}")

    threads = [threading.Thread(target=send) for _ in range(2)]
    try:
        threads[0].start()
        wait_for_gauge("llmos_queue_running", 1)  # admitted, blocked in prefill
        threads[1].start()
        wait_for_gauge("llmos_queue_waiting", 1)
        full = client.post("/v1/chat/completions", json=CHAT)
        assert full.status_code == 503
        samples = scrape(client)
        assert value(samples, "llmos_queue_waiting", model=REF, engine="hf") == 1
        assert value(samples, "llmos_queue_running", model=REF, engine="hf") == 1
        assert value(samples, "llmos_queue_rejected_total", model=REF, engine="hf") == 1
        assert value(samples, "llmos_http_requests_total", method="POST", route="/v1/chat/completions",
                     status="503") == 1
    finally:
        GatedEngine.gate.set()
        for t in threads:
            t.join(BACKSTOP_S)
    assert results == [200, 200]
    assert value(scrape(client), "llmos_queue_waiting", model=REF, engine="hf") == 0


def test_feedback_counts_and_canary_shares(make_app, builtin_runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    client = make_app()
    ids = [client.post("/v1/chat/completions", json=CHAT).json()["id"] for _ in range(3)]
    before = scrape(client)
    for rid, body in zip(ids, ({"rating": 1}, {"rating": -1}, {"rating": -1, "correction": "a better answer"})):
        r = client.post("/v1/feedback", json={"request_id": rid, **body})
        assert r.status_code in (200, 201), r.text
    unregister = register_canary_source(lambda: [CanaryShare(SMOL, "v2", 0.25)])
    try:
        record_canary_outcome(SMOL, "v1", "promoted")
        after = scrape(client)
    finally:
        unregister()
        with builtin_runtime.db.session() as s:
            s.execute(delete(Feedback).where(Feedback.request_id.in_(ids)))
    moved = {r: value(after, "llmos_feedback_total", model=REF, rating=r) -
             value(before, "llmos_feedback_total", model=REF, rating=r) for r in ("up", "down")}
    assert moved == {"up": 1, "down": 2}
    assert value(after, "llmos_feedback_corrections_total", model=REF) >= 1
    assert value(after, "llmos_canary_share", model=SMOL, version="v2") == 0.25
    assert value(after, "llmos_canary_outcomes_total", model=SMOL, outcome="promoted") >= 1
    assert ("llmos_canary_share", (("model", SMOL), ("version", "v2"))) not in scrape(client)


def test_a_failing_canary_source_does_not_break_the_scrape(make_app) -> None:  # type: ignore[no-untyped-def]
    client = make_app()

    def broken() -> list[CanaryShare]:
        raise RuntimeError("loop state unreadable")

    unregister = register_canary_source(broken)
    try:
        samples = scrape(client)
    finally:
        unregister()
    assert value(samples, "llmos_memory_budget_bytes") > 0


def test_request_log_rows_match_the_counter(make_app, builtin_runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    client = make_app()
    r = client.post("/v1/completions", json={"model": SMOL, "prompt": "Once upon", "max_tokens": 3})
    assert r.status_code == 200
    with builtin_runtime.db.session() as s:
        row = s.get(RequestLog, r.json()["id"])
    samples = scrape(client)
    assert value(samples, "llmos_requests_total", route="completion", model=row.model, status=str(row.status)) == 1


def test_requests_refused_before_routing_are_named_by_their_route() -> None:
    """A middleware that answers before the router (as authentication does) still yields a bounded
    route label, never the raw path."""
    app = FastAPI()

    @app.get("/v1/things/{thing_id}")
    def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    class Deny:
        def __init__(self, inner):  # type: ignore[no-untyped-def]
            self.inner = inner

        async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
            if scope["type"] == "http" and scope["path"].endswith("/secret"):
                await JSONResponse({"error": "no key"}, status_code=401)(scope, receive, send)
                return
            await self.inner(scope, receive, send)

    metrics = Metrics()
    app.add_middleware(Deny)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)
    with TestClient(app) as client:
        assert client.get("/v1/things/a").status_code == 200
        assert client.get("/v1/things/secret").status_code == 401
        assert client.get("/nowhere/secret").status_code == 401
    counted = {(s.labels["route"], s.labels["status"]): s.value
               for fam in metrics.registry.collect() if fam.name == "llmos_http_requests"
               for s in fam.samples if s.name.endswith("_total")}
    assert counted == {("/v1/things/{thing_id}", "200"): 1, ("/v1/things/{thing_id}", "401"): 1,
                       ("unmatched", "401"): 1}
