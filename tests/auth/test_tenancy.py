"""Tenant boundaries: another tenant's job, dataset, request id and private model answer exactly like
absent ones (404, same error type, no names leaked)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from llmos.jobs import register_job_kind
from llmos.runtime import Runtime
from tests.auth.conftest import CHAT, SMOL, Key, MakeKey

CSV = ("rows.csv", b"text,label\ngreat film,1\nawful plot,0\nlovely cast,1\nboring,0\n", "text/csv")


@pytest.fixture
def two(make_key: MakeKey) -> tuple[Key, Key]:
    return make_key("infer", "train", "read"), make_key("infer", "train", "read")


def _same_as_absent(client: TestClient, key: Key, method: str, path: str, real: str, absent: str,
                    **kw: object) -> None:
    """``path`` with another tenant's ``real`` id answers as with the never-seen ``absent`` id."""
    theirs = client.request(method, path.format(real), headers=key.headers, **kw)  # type: ignore[arg-type]
    nobody = client.request(method, path.format(absent), headers=key.headers, **kw)  # type: ignore[arg-type]
    assert theirs.status_code == nobody.status_code == 404, (theirs.text, nobody.text)
    a, b = theirs.json()["error"], nobody.json()["error"]
    assert a["type"] == b["type"] and a["message"].replace(real, "X") == b["message"].replace(absent, "X")


def test_datasets_are_invisible_across_tenants(secure_client: TestClient, two: tuple[Key, Key]) -> None:
    a, b = two
    r = secure_client.post("/v1/datasets", headers=a.headers, files={"file": CSV},
                           data={"name": "reviews", "task": "classify"})
    assert r.status_code == 201, r.text
    assert [d["name"] for d in secure_client.get("/v1/datasets", headers=a.headers).json()["data"]] == ["reviews"]
    assert secure_client.get("/v1/datasets", headers=b.headers).json()["data"] == []
    _same_as_absent(secure_client, b, "GET", "/v1/datasets/{}", "reviews", "nothing")
    _same_as_absent(secure_client, b, "POST", "/v1/datasets/{}/split", "reviews", "nothing", json={})
    r = secure_client.post("/v1/training/jobs", headers=b.headers,
                           json={"model": "minilm-l6", "dataset": "reviews"})
    assert r.status_code == 404 and "reviews" in r.json()["error"]["message"]


def test_jobs_are_invisible_across_tenants(secure_client: TestClient, two: tuple[Key, Key]) -> None:
    a, b = two
    register_job_kind("count", "tests.jobs.jobkinds:count", replace=True)
    jobs = secure_client.app.state.jobs  # type: ignore[attr-defined]
    job_id = jobs.submit("count", {"n": 3}, tenant=a.tenant)  # no lifespan: it stays queued
    try:
        assert secure_client.get(f"/v1/jobs/{job_id}", headers=a.headers).status_code == 200
        assert secure_client.get("/v1/jobs", headers=b.headers).json()["data"] == []
        for method, path in [("GET", "/v1/jobs/{}"), ("GET", "/v1/jobs/{}/events"), ("GET", "/v1/jobs/{}/logs"),
                             ("POST", "/v1/jobs/{}/cancel"), ("POST", "/v1/jobs/{}/pause"),
                             ("GET", "/v1/training/jobs/{}"), ("GET", "/v1/tuning/jobs/{}"),
                             ("GET", "/v1/tuning/jobs/{}/trials")]:
            _same_as_absent(secure_client, b, method, path, job_id, "job-000000000000")
    finally:
        assert secure_client.post(f"/v1/jobs/{job_id}/cancel", headers=a.headers).status_code == 200


def test_request_ids_are_invisible_across_tenants(secure_client: TestClient, two: tuple[Key, Key]) -> None:
    a, b = two
    rid = secure_client.post("/v1/chat/completions", json=CHAT, headers=a.headers).headers["x-request-id"]
    theirs = secure_client.post("/v1/feedback", headers=b.headers, json={"request_id": rid, "rating": -1})
    nobody = secure_client.post("/v1/feedback", headers=b.headers, json={"request_id": "req-none", "rating": -1})
    assert theirs.status_code == nobody.status_code == 404
    assert theirs.json()["error"]["message"].replace(rid, "X") == nobody.json()["error"]["message"].replace(
        "req-none", "X")
    assert secure_client.get("/v1/feedback", headers=b.headers).json()["data"] == []
    r = secure_client.post("/v1/feedback", headers=a.headers, json={"request_id": rid, "rating": 1})
    assert r.status_code in (200, 201), r.text


def test_private_models_are_invisible_across_tenants(secure_client: TestClient, two: tuple[Key, Key],
                                                     builtin_runtime: Runtime) -> None:
    a, b = two
    registry = builtin_runtime.store.registry
    private = f"private-{a.tenant}"
    registry.add(f"{private}:latest", registry.get(SMOL).manifest, tenant=a.tenant)
    try:
        listed = lambda k: {m["id"] for m in secure_client.get("/v1/models", headers=k.headers).json()["data"]}  # noqa: E731
        assert private in listed(a) and SMOL in listed(a)
        assert private not in listed(b) and SMOL in listed(b)
        assert secure_client.post("/v1/chat/completions", json={**CHAT, "model": private},
                                  headers=a.headers).status_code == 200
        for path, body in [("/v1/chat/completions", CHAT), ("/v1/completions", {"model": "", "prompt": "hi"}),
                           ("/v1/embeddings", {"model": "", "input": "hi"})]:
            absent = f"private-{b.tenant}"  # a name nobody has
            theirs = secure_client.post(path, json={**body, "model": private}, headers=b.headers)
            nobody = secure_client.post(path, json={**body, "model": absent}, headers=b.headers)
            assert theirs.status_code == nobody.status_code == 404
            assert theirs.text.replace(private, "X") == nobody.text.replace(absent, "X")
            assert private not in theirs.json()["error"]["available"]
        for method, path, body in [("GET", "/v1/loop/{}/history", None),
                                   ("PUT", "/v1/loop/{}", {}),
                                   ("POST", "/v1/training/jobs", {"dataset": "none"})]:
            absent = f"private-{b.tenant}"
            kw = lambda n: {"json": {**body, "model": n}} if path == "/v1/training/jobs" else (  # noqa: E731
                {"json": body} if body is not None else {})
            theirs = secure_client.request(method, path.format(private), headers=b.headers, **kw(private))
            nobody = secure_client.request(method, path.format(absent), headers=b.headers, **kw(absent))
            assert theirs.status_code == nobody.status_code == 404, (path, theirs.text)
            assert theirs.text.replace(private, "X") == nobody.text.replace(absent, "X")
    finally:
        registry.remove(f"{private}:latest", tenant=a.tenant)
