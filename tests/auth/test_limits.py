"""Rate limits, daily token quotas (also when they run out mid-stream), body size and max_tokens limits,
and auth switching itself on off loopback."""

from __future__ import annotations

import json
import time

from fastapi.testclient import TestClient
from sqlalchemy import select

from llmos.daemon import create_app
from llmos.auth.limits import Limiter
from llmos.db.tables import AuditEvent, RequestLog
from llmos.runtime import Runtime
from tests.auth.conftest import CHAT, MakeKey
from tests.conftest import make_settings
from tests.kernel.conftest import FakeClock


def _events(text: str) -> list[object]:
    lines = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def test_rate_limit_burst_gets_429_with_retry_after(secure_client: TestClient, make_key: MakeKey,
                                                    builtin_runtime: Runtime) -> None:
    clock = FakeClock(time.monotonic())  # the buckets refill only when the test moves it
    secure_client.app.state.limiter._clock = clock  # noqa: SLF001 - the app's limiter, on the test's clock
    key = make_key("read", rate_limit=2)
    codes = [secure_client.get("/v1/models", headers=key.headers) for _ in range(4)]
    assert [r.status_code for r in codes[:2]] == [200, 200]  # a burst of `rate` requests
    refused = codes[2]
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    other = make_key("read", rate_limit=2, tenant=key.tenant)  # limits are per key
    assert secure_client.get("/v1/models", headers=other.headers).status_code == 200
    clock.advance(1.0)  # two tokens back at 2/s
    assert secure_client.get("/v1/models", headers=key.headers).status_code == 200
    with builtin_runtime.db.session() as s:
        reasons = [e.detail["reason"] for e in s.scalars(select(AuditEvent).where(AuditEvent.actor == key.id))]
    assert "rate_limit_exceeded" in reasons


def _prompt_tokens(client: TestClient, make_key: MakeKey) -> int:
    return client.post("/v1/chat/completions", json=CHAT, headers=make_key("infer").headers).json()["usage"][
        "prompt_tokens"]


def test_quota_caps_an_answer_then_refuses(secure_client: TestClient, make_key: MakeKey) -> None:
    p = _prompt_tokens(secure_client, make_key)
    key = make_key("infer", token_quota=p + 3)
    body = secure_client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 20}, headers=key.headers).json()
    assert body["usage"]["completion_tokens"] == 3 and body["choices"][0]["finish_reason"] == "length"
    r = secure_client.post("/v1/chat/completions", json=CHAT, headers=key.headers)
    assert r.status_code == 429 and r.json()["error"]["type"] == "quota_exceeded"
    assert 1 <= int(r.headers["retry-after"]) <= 86400
    assert secure_client.get("/v1/models", headers=key.headers).status_code == 429  # until the day ends


def test_quota_running_out_mid_stream_ends_it_cleanly(secure_client: TestClient, make_key: MakeKey,
                                                      builtin_runtime: Runtime) -> None:
    p = _prompt_tokens(secure_client, make_key)
    key = make_key("infer", token_quota=p + 3)
    r = secure_client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 20, "stream": True},
                           headers=key.headers)
    assert r.status_code == 200
    events = _events(r.text)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2])  # type: ignore[index]
    assert text == "t1 t2 t3 "
    assert events[-2]["error"]["type"] == "quota_exceeded" and "quota" in events[-2]["error"]["message"]  # type: ignore[index]
    assert events[-1] == "[DONE]"
    with builtin_runtime.db.session() as s:
        row = s.get(RequestLog, r.headers["x-request-id"])
        assert (row.status, row.completion_tokens, row.key_id) == (429, 3, key.id)
    # the next request is refused up front, and a fresh limiter (a restarted daemon) agrees from the log
    assert secure_client.post("/v1/chat/completions", json=CHAT, headers=key.headers).status_code == 429
    assert Limiter(builtin_runtime.db).used_today(key.id) == p + 3


def test_body_size_limit_is_413_declared_or_streamed(secure_client: TestClient, make_key: MakeKey) -> None:
    key = make_key("infer")
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 70_000}]}
    r = secure_client.post("/v1/chat/completions", json=big, headers=key.headers)
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
    chunks = (b'{"model": "x", "pad": "' + b"y" * 8192 for _ in range(10))  # chunked: no Content-Length
    r = secure_client.post("/v1/chat/completions", content=chunks,
                           headers={**key.headers, "content-type": "application/json"})
    assert r.status_code == 413 and "LLMOS_MAX_BODY_BYTES" in r.json()["error"]["message"]
    r = secure_client.post("/v1/chat/completions", json=big)  # size is checked before the key
    assert r.status_code == 413


def test_max_tokens_over_the_daemon_limit_is_400(secure_client: TestClient, make_key: MakeKey) -> None:
    r = secure_client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 65}, headers=make_key("infer").headers)
    assert r.status_code == 400 and "LLMOS_MAX_TOKENS" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "max_tokens"


def test_auth_turns_itself_on_off_loopback(builtin_runtime: Runtime, fake_kernel_factory) -> None:  # type: ignore[no-untyped-def]
    def client_for(host: str) -> TestClient:
        s = make_settings(builtin_runtime.settings.home, database_url=builtin_runtime.settings.database_url,
                          host=host)
        return TestClient(create_app(Runtime(s, builtin_runtime.db, builtin_runtime.store), fake_kernel_factory()))

    assert client_for("0.0.0.0").get("/v1/models").status_code == 401
    assert client_for("192.168.1.20").get("/v1/models").status_code == 401
    assert client_for("127.0.0.1").get("/v1/models").status_code == 200
    assert client_for("localhost").get("/v1/models").status_code == 200
