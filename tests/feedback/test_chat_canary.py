"""Chat and completion requests for NAME / NAME:latest are split by request id during a canary, exactly as
task requests are, and their conversations are kept for the loop. The engine is a fake (this is routing
and logging, not generation); the tokenizer and chat template are SmolLM2's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from llmos.daemon import create_app
from llmos.db.tables import RequestLog
from llmos.engines.base import FakeEngine
from llmos.feedback.canary import to_candidate
from llmos.feedback.policy import Policies
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime
from tests.feedback.conftest import LoopHome
from tests.train.conftest import SMOL

SALT, SHARE = "chat-salt", 0.5


@pytest.fixture
def client(builtin_runtime: Runtime, tmp_path: Path) -> Iterator[tuple[TestClient, LoopHome]]:
    home = LoopHome(tmp_path / "home", builtin_runtime)
    home.add_builtin(SMOL)
    reg = home.rt.store.registry
    smol = reg.get(SMOL).manifest
    for tag in ("v1", "v2"):  # two versions, two manifests (a response names the version by its digest)
        reg.add(f"helper:{tag}", smol.model_copy(update={"source": f"{smol.source} ({tag})"}))
    reg.tag("helper:v1", "helper:latest")
    kernel = Kernel(home.rt.settings, reg, engine_factory=lambda ref: FakeEngine(ref, eos_after=3))
    with TestClient(create_app(home.rt, kernel)) as c:
        yield c, home
    kernel.close()
    home.close()


def start_canary(home: LoopHome) -> None:
    policies = Policies(home.rt.db)
    policies.set("helper", "default", {"canary_min": 1000})
    policies.update("helper", "default", state="canary", canary={
        "candidate": "helper:v2", "serving": "helper:v1", "share": SHARE, "salt": SALT, "min_requests": 1000,
        "started_at": datetime.now(timezone.utc).isoformat()})


def test_chat_and_completion_requests_are_split_by_request_id(client: tuple[TestClient, LoopHome]) -> None:
    c, home = client
    start_canary(home)
    seen: dict[str, str] = {}
    for i in range(16):
        chat = c.post("/v1/chat/completions", json={"model": "helper", "max_tokens": 4, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Question {i}?"}]})
        done = c.post("/v1/completions", json={"model": "helper:latest", "max_tokens": 4, "prompt": f"Say {i}"})
        for r in (chat, done):
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["id"] == r.headers["X-Request-Id"]
            expected = "helper:v2" if to_candidate(SALT, body["id"], SHARE) else "helper:v1"
            assert body["model"] == expected
            seen[body["id"]] = expected
    assert set(seen.values()) == {"helper:v1", "helper:v2"}  # both arms answered, each naming its version
    pinned = c.post("/v1/chat/completions", json={"model": "helper:v1", "max_tokens": 2,
                                                  "messages": [{"role": "user", "content": "hi"}]}).json()
    assert pinned["model"] == "helper:v1"  # a named version is never rerouted

    with home.rt.db.session() as s:
        logged = {r.id: r for r in s.query(RequestLog).filter(RequestLog.id.in_(seen))}
    assert {logged[i].model for i in seen if seen[i] == "helper:v2"} == {"helper:v2"}
    chats = [r for r in logged.values() if r.route == "chat"]
    assert chats[0].prompt.startswith('[{"role": "system", "content": "Be brief."}')  # kept: the name learns
    assert all(r.output for r in logged.values())


def test_a_text_correction_longer_than_the_context_is_refused(client: tuple[TestClient, LoopHome]) -> None:
    c, home = client
    Policies(home.rt.db).set("helper", "default", {})
    rid = c.post("/v1/chat/completions", json={"model": "helper", "max_tokens": 2,
                                               "messages": [{"role": "user", "content": "hi"}]}).json()["id"]
    context = home.rt.store.registry.get("helper:v1").manifest.context_length
    r = c.post("/v1/feedback", json={"request_id": rid, "correction": "x" * (context * 4 + 1)})
    assert r.status_code == 400 and r.json()["error"]["param"] == "correction"
    assert "context" in r.json()["error"]["message"]
    empty = c.post("/v1/feedback", json={"request_id": rid, "correction": " "})
    assert empty.status_code == 400 and "non-empty string" in empty.json()["error"]["message"]
    ok = c.post("/v1/feedback", json={"request_id": rid, "rating": -1, "correction": "Hello! How can I help?"})
    assert ok.status_code == 200 and ok.json()["cut_off"] is False
