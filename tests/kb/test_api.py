"""The knowledge-base routes and grounded chat over HTTP, with the real MiniLM and SmolLM2: an auth-on
daemon with two tenants (scopes, isolation), citations in plain and streamed answers, and feedback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from llmos.daemon import create_app
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime
from tests.auth.conftest import SMOL, Key, MakeKey

pytestmark = pytest.mark.slow
QUESTION = "How long does a refund take to reach my account?"


@pytest.fixture
def client(secure_runtime: Runtime) -> Iterator[TestClient]:
    """An auth-on app with a real kernel (no lifespan: no job runner is needed here)."""
    kernel = Kernel(secure_runtime.settings, secure_runtime.store.registry)
    c = TestClient(create_app(secure_runtime, kernel))
    yield c
    c.close()
    kernel.close()


def _upload(client: TestClient, key: Key, name: str, paths: list[Path], extra: list | None = None):  # type: ignore[no-untyped-def]
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths] + (extra or [])
    return client.post(f"/v1/kb/{name}/documents", headers=key.headers, files=files)


def _make_help(client: TestClient, key: Key, docs: list[Path]) -> None:
    r = client.post("/v1/kb", headers=key.headers, json={"name": "help", "chunk_size": 300, "overlap": 40})
    assert r.status_code == 201, r.text
    r = _upload(client, key, "help", docs, [("files", ("broken.pdf", b"%PDF-1.4 not really", "application/pdf"))])
    assert r.status_code == 201, r.text
    body = r.json()
    assert len(body["added"]) == 5 and [f["file"] for f in body["failed"]] == ["broken.pdf"]


def test_routes_scopes_and_tenants(client: TestClient, make_key: MakeKey, docs: list[Path]) -> None:
    writer = make_key("train", "read")
    _make_help(client, writer, docs)
    listed = client.get("/v1/kb", headers=writer.headers).json()["data"]
    assert [(k["name"], k["documents"], k["embed_model"]) for k in listed] == [("help", 5, "minilm-l6")]
    shown = client.get("/v1/kb/help", headers=writer.headers).json()
    assert shown["version"] == 2 and {d["name"] for d in shown["document_list"]} >= {"refunds.md", "cards.html"}

    reader = make_key("read", tenant=writer.tenant)
    r = client.post("/v1/kb/help/search", headers=reader.headers, json={"query": QUESTION, "k": 2})
    assert r.status_code == 200, r.text
    top = r.json()["data"][0]
    assert top["document"] == "refunds.md" and top["chunk"] == 0 and top["score"] > 0 and "business days" in top["text"]
    assert client.post("/v1/kb", headers=reader.headers, json={"name": "x"}).status_code == 403
    assert client.delete("/v1/kb/help", headers=reader.headers).status_code == 403

    other = make_key("train", "read", "infer")
    assert client.get("/v1/kb", headers=other.headers).json()["data"] == []
    for method, path, kw in [("GET", "/v1/kb/{}", {}), ("DELETE", "/v1/kb/{}", {}),
                             ("POST", "/v1/kb/{}/search", {"json": {"query": "refund"}})]:
        theirs = client.request(method, path.format("help"), headers=other.headers, **kw)
        nobody = client.request(method, path.format("nothing"), headers=other.headers, **kw)
        assert theirs.status_code == nobody.status_code == 404
        assert theirs.json()["error"]["type"] == nobody.json()["error"]["type"]
    r = client.post("/v1/chat/completions", headers=other.headers,
                    json={"model": SMOL, "knowledge": "help", "messages": [{"role": "user", "content": QUESTION}]})
    assert r.status_code == 404 and "help" in r.json()["error"]["message"]

    bad = client.post("/v1/kb", headers=writer.headers, json={"name": "x", "embed_model": SMOL})
    assert bad.status_code == 400 and "minilm-l6" in bad.json()["error"]["message"]
    assert client.post("/v1/kb", headers=writer.headers, json={"name": "help"}).status_code == 409
    r = client.post("/v1/kb/help/search", headers=writer.headers, json={"query": "x", "colour": "red"})
    assert r.status_code == 400 and "error" in r.json()
    assert client.delete("/v1/kb/help", headers=writer.headers).json()["deleted"] is True
    assert client.get("/v1/kb/help", headers=writer.headers).status_code == 404


def test_grounded_answers_cite_their_passages(client: TestClient, make_key: MakeKey, docs: list[Path]) -> None:
    key = make_key("train", "read", "infer")
    _make_help(client, key, docs)
    body = {"model": SMOL, "knowledge": "help", "max_tokens": 24, "temperature": 0,
            "messages": [{"role": "user", "content": QUESTION}]}
    r = client.post("/v1/chat/completions", headers=key.headers, json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    cites = answer["citations"]
    assert cites[0]["document"] == "refunds.md" and cites[0]["index"] == 1 and len(cites) <= 4
    assert {"document", "chunk", "chunk_id", "score"} <= set(cites[0])
    assert answer["choices"][0]["message"]["content"]

    with client.stream("POST", "/v1/chat/completions", headers=key.headers, json={**body, "stream": True}) as s:
        events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    final = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert len(final) == 1 and final[0]["citations"] == cites
    assert all("citations" not in e for e in events if e is not final[0])

    fb = client.post("/v1/feedback", headers=key.headers, json={"request_id": answer["id"], "rating": 1})
    assert fb.status_code == 200, fb.text
    assert fb.json()["citations"] == cites
    listed = client.get("/v1/feedback", headers=key.headers).json()["data"]
    assert listed[-1]["citations"] == cites

    plain = client.post("/v1/chat/completions", headers=key.headers, json={k: v for k, v in body.items() if k != "knowledge"})
    assert plain.status_code == 200 and "citations" not in plain.json()
