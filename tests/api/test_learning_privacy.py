"""What the request log keeps to learn from: chat prompts and answers only for a model with a loop
policy (or under LLMOS_LOG_PROMPTS), and only for LLMOS_PROMPT_RETENTION_DAYS."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from fastapi.testclient import TestClient

from llmos.db.tables import LoopPolicy, RequestLog
from llmos.feedback.items import erase_old_text
from llmos.runtime import Runtime

SMOL = "smollm2-135m-instruct"
CHAT = {"model": SMOL, "messages": [{"role": "user", "content": "my card never arrived"}], "max_tokens": 3}


def logged(rt: Runtime, rid: str) -> RequestLog:
    with rt.db.session() as s:
        row = s.get(RequestLog, rid)
        assert row is not None
        s.expunge(row)
        return row


def test_chat_text_is_kept_only_while_the_model_has_a_loop_policy(fake_client: TestClient,
                                                                 builtin_runtime: Runtime) -> None:
    before = fake_client.post("/v1/chat/completions", json=CHAT).json()
    assert logged(builtin_runtime, before["id"]).prompt is None  # no policy: nothing kept
    try:
        r = fake_client.put(f"/v1/loop/{SMOL}", json={"min_feedback": 1000})
        assert r.status_code == 200, r.text
        kept = fake_client.post("/v1/chat/completions", json=CHAT).json()
        row = logged(builtin_runtime, kept["id"])
        assert json.loads(row.prompt) == CHAT["messages"]  # the conversation's turns, to train on
        assert row.output == kept["choices"][0]["message"]["content"]
        done = fake_client.post("/v1/completions", json={"model": SMOL, "prompt": "Dear support,", "max_tokens": 2})
        assert logged(builtin_runtime, done.json()["id"]).prompt == "Dear support,"
    finally:  # the session's shared store: no policy may outlive this test
        with builtin_runtime.db.session() as s:
            s.query(LoopPolicy).filter(LoopPolicy.name == SMOL).delete()


def test_kept_text_is_erased_after_the_retention(runtime: Runtime) -> None:
    now = datetime.now(timezone.utc)
    with runtime.db.session() as s:
        for rid, age in (("req-old", 31), ("req-new", 1)):
            s.add(RequestLog(id=rid, tenant="default", route="classify", model="m:v1", status=200,
                             prompt='["a"]', output=["x"], created_at=now - timedelta(days=age)))
    assert erase_old_text(runtime.db, 0) == 0  # 0: kept
    assert erase_old_text(runtime.db, 30) == 1
    old, new = logged(runtime, "req-old"), logged(runtime, "req-new")
    assert (old.prompt, old.output, old.status) == (None, None, 200)  # the row stays, its text goes
    assert (new.prompt, new.output) == ('["a"]', ["x"])
    assert erase_old_text(runtime.db, 30) == 0  # nothing left to erase
