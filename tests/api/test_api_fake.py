"""API and kernel logic with fake engines over the real store: wire format, errors, backpressure."""

import asyncio
import json

import httpx
import pytest
from fastapi.testclient import TestClient

from llmos.daemon import create_app
from llmos.db.tables import RequestLog
from llmos.engines.base import FakeEngine
from llmos.runtime import Runtime

SMOL = "smollm2-135m-instruct"
CHAT = {"model": SMOL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 5}


def _events(text: str) -> list[object]:
    lines = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def test_chat_completion_shape_and_request_log(fake_client: TestClient, builtin_runtime: Runtime) -> None:
    r = fake_client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == SMOL
    assert body["choices"][0]["message"]["content"] == "t1 t2 t3 t4 t5 "
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5 and body["usage"]["prompt_tokens"] > 5
    assert r.headers["x-request-id"] == body["id"]
    with builtin_runtime.db.session() as s:
        row = s.get(RequestLog, body["id"])
        assert (row.route, row.model, row.completion_tokens, row.status) == ("chat", f"{SMOL}:latest", 5, 200)
        assert row.prompt is None  # prompts are only kept when LLMOS_LOG_PROMPTS is on


def test_streaming_chat_is_server_sent_events(fake_client: TestClient) -> None:
    r = fake_client.post("/v1/chat/completions", json={**CHAT, "stream": True,
                                                       "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[1:-1] if e["choices"])
    assert text == "t1 t2 t3 t4 t5 "
    assert events[-3]["choices"][0]["finish_reason"] == "length"
    assert events[-2]["usage"]["completion_tokens"] == 5


def test_completion_route(fake_client: TestClient) -> None:
    r = fake_client.post("/v1/completions", json={"model": SMOL, "prompt": "Once upon", "max_tokens": 3})
    assert r.status_code == 200
    assert r.json()["choices"][0]["text"] == "t1 t2 t3 "


@pytest.mark.parametrize("payload,status,needle", [
    ({**CHAT, "model": "smollm"}, 404, "Did you mean smollm2-135m-instruct"),
    ({**CHAT, "model": "../etc"}, 400, "invalid model name"),
    ({k: v for k, v in CHAT.items() if k != "messages"}, 422, "messages"),
    ({**CHAT, "messages": []}, 422, "messages"),
    ({**CHAT, "temperature": "hot"}, 422, "temperature"),
    ({**CHAT, "max_tokens": 10_000}, 400, "context"),
    ({**CHAT, "n": 17}, 422, "n"),
    ({**CHAT, "n": 16, "max_tokens": 300}, 400, "n 16 x max_tokens 300"),
    ({**CHAT, "model": "minilm-l6"}, 400, "cannot generate"),
    ({**CHAT, "messages": [{"role": "user", "content": "x" * 40_000}]}, 413, "characters"),
])
def test_bad_requests_get_clear_errors(fake_client: TestClient, payload: dict, status: int, needle: str) -> None:
    r = fake_client.post("/v1/chat/completions", json=payload)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
    assert "Traceback" not in r.text


def test_malformed_json_is_400(fake_client: TestClient) -> None:
    r = fake_client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"


def test_unknown_model_lists_the_known_ones(fake_client: TestClient) -> None:
    err = fake_client.post("/v1/embeddings", json={"model": "nope", "input": "x"}).json()["error"]
    assert "minilm-l6" in err["available"] and "smollm2-135m-instruct" in err["available"]


def test_classify_on_a_generator_names_the_models_that_can(fake_client: TestClient) -> None:
    r = fake_client.post("/v1/classify", json={"model": SMOL, "input": ["good"]})
    assert r.status_code == 400 and "cannot classify" in r.json()["error"]["message"]


def test_admin_load_ps_unload(fake_client: TestClient) -> None:
    # Jobs other tests left queued in the session's database may hold a memory reservation.
    before = fake_client.get("/admin/ps").json()["used_bytes"]
    assert fake_client.post("/admin/load", json={"model": SMOL}).json()["loaded"] is True
    ps = fake_client.get("/admin/ps").json()
    assert [m["model"] for m in ps["models"]] == [f"{SMOL}:latest"] and ps["used_bytes"] > before
    assert fake_client.post("/admin/unload", json={"model": SMOL}).json()["unloaded"] is True
    assert fake_client.get("/admin/ps").json()["used_bytes"] == before


async def _burst(app, n: int, body: dict) -> list[httpx.Response]:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as c:
        return await asyncio.gather(*[c.post("/v1/chat/completions", json=body) for _ in range(n)])


def test_queue_overflow_is_503_with_retry_after(builtin_runtime: Runtime, fake_kernel_factory) -> None:  # type: ignore[no-untyped-def]
    kernel = fake_kernel_factory(max_queue=2, max_batch=1)
    app = create_app(builtin_runtime, kernel)
    responses = asyncio.run(_burst(app, 8, {**CHAT, "max_tokens": 60}))  # ~1 s each: all 8 overlap
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 3 and 503 in codes, codes
    rejected = next(r for r in responses if r.status_code == 503)
    assert int(rejected.headers["retry-after"]) >= 1
    assert rejected.json()["error"]["type"] == "queue_full"


def test_a_model_that_fails_to_load_fails_its_requests_only(builtin_runtime: Runtime, fake_kernel_factory) -> None:  # type: ignore[no-untyped-def]
    def factory(ref: str) -> FakeEngine:
        if ref.startswith("smollm2"):
            raise RuntimeError("weights unreadable")
        return FakeEngine(ref)

    kernel = fake_kernel_factory(factory)
    with TestClient(create_app(builtin_runtime, kernel)) as client:
        r = client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 500 and "failed to load" in r.json()["error"]["message"]
        ok = client.post("/v1/embeddings", json={"model": "minilm-l6", "input": ["abc"]})
        assert ok.status_code == 200 and ok.json()["data"][0]["embedding"] == [3.0, 1.0]


def test_client_disconnect_mid_stream_frees_its_slot(builtin_runtime: Runtime, fake_kernel_factory) -> None:  # type: ignore[no-untyped-def]
    from tests.api.server import serving
    from tests.waiting import BACKSTOP_S, wait_until

    kernel = fake_kernel_factory(max_batch=1)
    with serving(create_app(builtin_runtime, kernel)) as url:
        with httpx.stream("POST", url + "/v1/chat/completions", timeout=BACKSTOP_S,
                          json={**CHAT, "max_tokens": 500, "stream": True}) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any("t2" in g for g in got)
        engine = kernel.engines[f"{SMOL}:latest"]
        wait_until(lambda: not engine.live and not kernel.worker(f"{SMOL}:latest").scheduler.running,
                   "the abandoned request's slot freed")
        # the freed slot serves the next client at once (max_batch=1)
        r = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=BACKSTOP_S)
        assert r.status_code == 200
        stats = kernel.worker(f"{SMOL}:latest").scheduler.stats()
        assert stats.aborted == 1


def test_a_model_bigger_than_the_budget_is_refused_clearly(builtin_runtime: Runtime, fake_kernel_factory) -> None:  # type: ignore[no-untyped-def]
    kernel = fake_kernel_factory(memory_budget=200 * 1024**2)  # SmolLM2 needs ~680 MB, MiniLM ~115 MB
    with TestClient(create_app(builtin_runtime, kernel)) as client:
        r = client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 507, r.text
        assert "memory budget" in r.json()["error"]["message"]
        assert client.post("/v1/embeddings", json={"model": "minilm-l6", "input": "fits"}).status_code == 200


def test_the_kernel_evicts_an_idle_model_to_make_room(builtin_runtime: Runtime, fake_kernel_factory) -> None:  # type: ignore[no-untyped-def]
    big = 600 * 1024**2
    kernel = fake_kernel_factory(lambda ref: FakeEngine(ref, footprint_bytes=big), memory_budget=700 * 1024**2)
    with TestClient(create_app(builtin_runtime, kernel)) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert [m["model"] for m in client.get("/admin/ps").json()["models"] if m["loaded"]] == [f"{SMOL}:latest"]
        assert client.post("/v1/embeddings", json={"model": "minilm-l6", "input": "x"}).status_code == 200
        loaded = [m["model"] for m in client.get("/admin/ps").json()["models"] if m["loaded"]]
        assert loaded == ["minilm-l6:latest"]  # SmolLM2 was idle, so it made room
        assert kernel.engines[f"{SMOL}:latest"].closed
