"""Key scope x route -> status, for every route group; 401 for missing, malformed, unknown and revoked keys."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from llmos.auth import revoke
from llmos.db.tables import AuditEvent
from llmos.runtime import Runtime
from tests.auth.conftest import CHAT, SMOL, MakeKey

CSV = ("rows.csv", b"text,label\ngreat film,1\nawful plot,0\nlovely cast,1\nboring,0\n", "text/csv")
JSONL = ("rows.jsonl", b'{"text": "great film", "label": 1}\n{"text": "awful plot", "label": 0}\n', "application/jsonl")

# (route, method, path, json body, status when the scope allows it, scopes that allow it besides admin)
ROUTES = [
    ("chat", "POST", "/v1/chat/completions", CHAT, 200, {"infer"}),
    ("completions", "POST", "/v1/completions", {"model": SMOL, "prompt": "Once", "max_tokens": 2}, 200, {"infer"}),
    ("embeddings", "POST", "/v1/embeddings", {"model": "minilm-l6", "input": "x"}, 200, {"infer"}),
    ("classify", "POST", "/v1/classify", {"model": SMOL, "input": ["x"]}, 400, {"infer"}),
    ("tag", "POST", "/v1/tag", {"model": SMOL, "input": ["x"]}, 400, {"infer"}),
    ("feedback", "POST", "/v1/feedback", {"request_id": "req-nope", "rating": 1}, 404, {"infer"}),
    ("feedback list", "GET", "/v1/feedback", None, 200, {"read", "infer"}),
    ("models", "GET", "/v1/models", None, 200, {"read", "infer", "train"}),
    ("metrics", "GET", "/metrics", None, 200, set()),  # its labels name every tenant's models
    ("model", "GET", f"/v1/models/{SMOL}", None, 200, {"read", "infer", "train"}),
    ("jobs", "GET", "/v1/jobs", None, 200, {"read", "train"}),
    ("job", "GET", "/v1/jobs/job-nope", None, 404, {"read", "train"}),
    ("job cancel", "POST", "/v1/jobs/job-nope/cancel", None, 404, {"train"}),
    ("datasets", "GET", "/v1/datasets", None, 200, {"read", "train"}),
    ("dataset import", "POST", "/v1/datasets", "upload", 201, {"train"}),
    ("fine-tune list", "GET", "/v1/training/jobs", None, 200, {"read", "train"}),
    ("fine-tune", "POST", "/v1/training/jobs", {"model": "nope", "dataset": "nope"}, 404, {"train"}),
    ("tuning list", "GET", "/v1/tuning/jobs", None, 200, {"read", "train"}),
    ("openai fine-tune list", "GET", "/v1/fine_tuning/jobs", None, 200, {"read", "train"}),
    ("openai fine-tune events", "GET", "/v1/fine_tuning/jobs/job-nope/events", None, 404, {"read", "train"}),
    ("openai fine-tune", "POST", "/v1/fine_tuning/jobs", {"model": SMOL, "training_file": "file-nope"}, 404,
     {"train"}),
    ("openai fine-tune cancel", "POST", "/v1/fine_tuning/jobs/job-nope/cancel", None, 404, {"train"}),
    ("files", "GET", "/v1/files", None, 200, {"read", "train", "infer"}),
    ("file upload", "POST", "/v1/files", "file", 200, {"train", "infer"}),
    ("file delete", "DELETE", "/v1/files/file-nope", None, 404, {"train", "infer"}),
    ("loop list", "GET", "/v1/loop", None, 200, {"read", "train"}),
    ("ps", "GET", "/admin/ps", None, 200, set()),
    ("load", "POST", "/admin/load", {"model": "nope"}, 404, set()),
    ("unload", "POST", "/admin/unload", {"model": SMOL}, 200, set()),
    ("alerts", "GET", "/admin/alerts", None, 200, set()),
]
SCOPES = ["admin", "infer", "read", "train"]


def _send(client: TestClient, method: str, path: str, body: object, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    if body == "upload":
        return client.post(path, headers=headers, files={"file": CSV}, data={"name": "tiny", "task": "classify"})
    if body == "file":
        return client.post(path, headers=headers, files={"file": JSONL}, data={"purpose": "fine-tune"})
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("route,method,path,body,ok,allowed", ROUTES, ids=[r[0] for r in ROUTES])
def test_scope_table(secure_client: TestClient, make_key: MakeKey, scope: str, route: str, method: str,
                     path: str, body: object, ok: int, allowed: set[str]) -> None:
    key = make_key(scope)
    r = _send(secure_client, method, path, body, key.headers)
    expected = ok if scope == "admin" or scope in allowed else 403
    assert r.status_code == expected, r.text
    if expected == 403:
        err = r.json()["error"]
        assert err["type"] == "insufficient_scope" and scope in err["message"]


@pytest.mark.parametrize("route,method,path,body,ok,allowed", ROUTES, ids=[r[0] for r in ROUTES])
def test_every_route_wants_a_key(secure_client: TestClient, route: str, method: str, path: str, body: object,
                                 ok: int, allowed: set[str]) -> None:
    r = _send(secure_client, method, path, body, {})
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_api_key"
    assert r.headers["www-authenticate"] == "Bearer"


def test_health_and_console_stay_open(secure_client: TestClient) -> None:
    assert secure_client.get("/health").status_code == 200
    assert secure_client.get("/console/login").status_code == 200  # the console signs people in itself


@pytest.mark.parametrize("header,reason", [
    (None, "missing key"),
    ("Basic dXNlcjpwYXNz", "malformed"),
    ("Bearer", "malformed"),
    ("Bearer llmos-short", "unknown or revoked"),
    ("Bearer llmos-" + "A" * 43, "unknown or revoked"),
    ("Bearer ' OR 1=1 --", "unknown or revoked"),
])
def test_bad_keys_are_401_without_a_trace(secure_client: TestClient, header: str | None, reason: str) -> None:
    r = secure_client.get("/v1/models", headers={"Authorization": header} if header else {})
    assert r.status_code == 401
    err = r.json()["error"]
    assert reason in err["message"] and "Traceback" not in r.text


def test_revoked_key_is_refused_at_once_and_audited(secure_client: TestClient, make_key: MakeKey,
                                                   builtin_runtime: Runtime) -> None:
    key = make_key("read")
    assert secure_client.get("/v1/models", headers=key.headers).status_code == 200
    revoke(builtin_runtime.db, key.id)
    r = secure_client.get("/v1/models", headers=key.headers)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    with builtin_runtime.db.session() as s:
        last = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert (last.action, last.actor, last.target, last.detail["status"]) == ("denied", "anonymous",
                                                                            "GET /v1/models", 401)


def test_denials_and_admin_actions_are_audited(secure_client: TestClient, make_key: MakeKey,
                                               builtin_runtime: Runtime) -> None:
    reader, admin = make_key("read"), make_key("admin")
    assert secure_client.post("/admin/unload", json={"model": SMOL}, headers=reader.headers).status_code == 403
    assert secure_client.post("/admin/unload", json={"model": SMOL}, headers=admin.headers).status_code == 200
    with builtin_runtime.db.session() as s:
        rows = {(e.actor, e.action, e.detail.get("status")) for e in s.scalars(
            select(AuditEvent).where(AuditEvent.actor.in_([reader.id, admin.id])))}
    assert rows == {(reader.id, "denied", 403), (admin.id, "admin_action", 200)}


@pytest.mark.parametrize("scope", [None, *SCOPES])
@pytest.mark.parametrize("method,path,status", [("GET", "/v1/nowhere", 404), ("POST", "/admin/nowhere", 404),
                                                ("DELETE", "/v1/models", 405), ("GET", "/v1/chat/completions", 405)])
def test_unknown_routes_and_methods_answer_alike_for_everyone(secure_client: TestClient, make_key: MakeKey,
                                                              scope: str | None, method: str, path: str,
                                                              status: int) -> None:
    """No key, any key: the same 404 / 405 in OpenAI's shape, before any scope check can hint at more."""
    headers = make_key(scope).headers if scope else {}
    r = secure_client.request(method, path, headers=headers)
    assert r.status_code == status, r.text
    assert set(r.json()["error"]) >= {"message", "type", "code", "param"}
    assert "scope" not in r.text

