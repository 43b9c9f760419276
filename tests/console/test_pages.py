"""Server-side console tests: every page renders, user-supplied text is escaped, CSRF and sign-in hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from llmos.auth import list_audit, revoke
from llmos.data import Datasets
from llmos.runtime import Runtime
from llmos.store.manifest import ManifestData
from tests.console.conftest import SCRIPT, TENANT, csrf_of, sign_in

PAGES = ["/console/", "/console/models", "/console/jobs", "/console/metrics", "/console/playground",
         "/console/datasets", "/console/kb", "/console/alerts", "/console/login"]
ESCAPED = "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;"


def assert_escaped(html: str) -> None:
    assert SCRIPT not in html and "<script>alert" not in html
    assert ESCAPED in html


@pytest.fixture(scope="module")
def injected(fresh_runtime: Runtime, sst2_slice: Path) -> str:
    """A dataset whose first row and a model whose labels, source and lineage carry a script tag."""
    Datasets.of(fresh_runtime).import_file(sst2_slice, "sst2-slice")
    manifest = ManifestData(files=[], architecture="BertForSequenceClassification", tasks=["classify"],
                            labels=[SCRIPT, "positive"], source=SCRIPT,
                            lineage={"method": SCRIPT, "dataset": {"name": "sst2-slice", "version": 1}})
    return fresh_runtime.store.registry.add("evil-model:v1", manifest).ref


@pytest.mark.parametrize("path", PAGES)
def test_pages_render_without_sign_in_when_auth_is_off(anon: TestClient, path: str) -> None:
    r = anon.get(path)
    assert r.status_code == 200, r.text
    assert "text/html" in r.headers["content-type"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert 'href="/console/models"' in r.text and csrf_of(r.text)


def test_root_leads_to_the_console(anon: TestClient) -> None:
    r = anon.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/console/"


def test_dataset_rows_are_escaped(anon: TestClient, injected: str) -> None:
    listing = anon.get("/console/datasets")
    assert "sst2-slice@1" in listing.text
    page = anon.get("/console/datasets/sst2-slice@1")
    assert page.status_code == 200
    assert_escaped(page.text)
    assert "it &#39;s a charming and often affecting journey ." in page.text  # real SST-2 rows follow


def test_model_fields_are_escaped(anon: TestClient, injected: str) -> None:
    listing = anon.get("/console/models")
    assert injected in listing.text
    page = anon.get(f"/console/models/{injected}")
    assert page.status_code == 200
    assert_escaped(page.text)
    assert 'href="/console/datasets/sst2-slice@1"' in page.text  # lineage links to its dataset


def test_script_in_a_model_name_never_reaches_a_page(anon: TestClient) -> None:
    r = anon.get("/console/models/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert r.status_code == 404
    assert "<script>alert" not in r.text


def test_unknown_job_is_a_404_page(anon: TestClient) -> None:
    r = anon.get("/console/jobs/no-such-job")
    assert r.status_code == 404 and "No job with that id here." in r.text


def test_live_endpoints_answer(anon: TestClient) -> None:
    ps = anon.get("/console/api/ps").json()
    assert ps["budget_bytes"] > 0 and ps["models"] == []
    stats = anon.get("/console/api/stats").json()
    assert {"waiting", "running", "tokens_per_s", "used_mib", "requests_per_min"} <= stats.keys()
    assert anon.get("/console/api/jobs").json() == {"data": []}


@pytest.mark.parametrize("path", ["/console/api/feedback", "/console/api/chat", "/console/api/classify"])
def test_posts_without_the_csrf_token_are_refused(anon: TestClient, path: str) -> None:
    anon.get("/console/")  # the browser has its CSRF cookie
    body = {"request_id": "x", "rating": 1} if "feedback" in path else {"model": "m", "input": "x"}
    assert anon.post(path, json=body).status_code == 403
    wrong = anon.post(path, json=body, headers={"X-CSRF-Token": "not-the-token"})
    assert wrong.status_code == 403 and wrong.json()["error"]["type"] == "csrf_refused"


def test_sign_in_form_needs_its_csrf_token(anon: TestClient) -> None:
    r = anon.post("/console/login", data={"key": "llmos-whatever"})
    assert r.status_code == 403


def test_auth_on_sends_people_to_sign_in(secured: TestClient, builtin_runtime: Runtime) -> None:
    secured.cookies.clear()
    r = secured.get("/console/models", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next=/console/models")
    assert secured.get("/console/api/ps").status_code == 401
    token = csrf_of(secured.get("/console/login").text)
    bad = secured.post("/console/login", data={"key": "llmos-not-a-key", "csrf_token": token})
    assert bad.status_code == 401 and "not valid" in bad.text
    denied = list_audit(builtin_runtime.db, action="denied", limit=5)
    assert any(e.target == "POST /console/login" for e in denied)  # a failed sign-in is audited


def test_session_cookie_is_httponly_and_strict(secured: TestClient, keys: dict[str, str]) -> None:
    secured.cookies.clear()
    token = csrf_of(secured.get("/console/login").text)
    form = {"key": keys["reader"], "csrf_token": token, "next": "https://evil.example/"}
    r = secured.post("/console/login", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/"  # no open redirect
    cookie = r.headers["set-cookie"].lower()
    assert "llmos_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert keys["reader"] not in r.headers["set-cookie"]  # the key stays on the server
    page = secured.get("/console/models")
    assert page.status_code == 200 and f"tenant {TENANT}" in page.text


def test_scopes_limit_pages(secured: TestClient, keys: dict[str, str]) -> None:
    secured.cookies.clear()
    sign_in(secured, keys["reader"])
    assert secured.get("/console/playground").status_code == 403
    alerts = secured.get("/console/alerts")
    assert alerts.status_code == 200 and "admin scope" in alerts.text


def test_chat_stream_and_escaped_feedback(secured: TestClient, keys: dict[str, str]) -> None:
    """A chat streams through the real route as the signed-in key; a comment with a script is shown escaped."""
    secured.cookies.clear()
    token = sign_in(secured, keys["user"])
    headers = {"X-CSRF-Token": token}
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
    with secured.stream("POST", "/console/api/chat", json=body, headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        request_id = r.headers["x-request-id"]
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) >= 1
    fb = secured.post("/console/api/feedback", headers=headers,
                      json={"request_id": request_id, "rating": -1, "correction": "Hello!", "comment": SCRIPT})
    assert fb.status_code == 200, fb.text
    assert fb.json()["request_id"] == request_id
    page = secured.get("/console/playground")
    assert request_id in page.text
    assert_escaped(page.text)
    stats = secured.get("/console/api/stats").json()  # the live charts count this tenant's chat
    assert stats["requests_per_min"] >= 1 and stats["completion_tokens_per_min"] >= 1


def test_revoked_key_ends_the_session(secured: TestClient, builtin_runtime: Runtime) -> None:
    from llmos.auth import create_key

    info, raw = create_key(builtin_runtime.db, tenant=TENANT, name="short-lived", scopes=["read"])
    secured.cookies.clear()
    sign_in(secured, raw)
    assert secured.get("/console/jobs").status_code == 200
    revoke(builtin_runtime.db, info.id)
    assert secured.get("/console/jobs", follow_redirects=False).status_code == 303


def test_sign_out(secured: TestClient, keys: dict[str, str]) -> None:
    secured.cookies.clear()
    token = sign_in(secured, keys["reader"])
    r = secured.post("/console/logout", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    assert secured.get("/console/", follow_redirects=False).status_code == 303
