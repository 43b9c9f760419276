"""What a request may carry, checked at the edge: every probe gets a 4xx in OpenAI's error shape,
never a 5xx, and never reaches SQLite, torch or a tokenizer (huge integers, lone surrogates, deep
nesting, invalid UTF-8); unknown routes and wrong methods answer the same to every caller."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from llmos.daemon import create_app
from llmos.auth import create_key
from llmos.engines.base import FakeEngine
from llmos.kernel.core import Kernel
from llmos.runtime import open_runtime
from tests.conftest import ModuleDirs, make_settings

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
HUGE = 2**64


@pytest.fixture(scope="module")
def client(module_dirs: ModuleDirs) -> Iterator[tuple[TestClient, dict[str, str]]]:
    home: Path = module_dirs("edge")
    rt = open_runtime(make_settings(home, auth="on"), builtins=False)
    kernel = Kernel(rt.settings, rt.store.registry, engine_factory=lambda ref: FakeEngine(ref))
    key = create_key(rt.db, tenant="edge", name="edge", scopes=["admin"])[1]
    yield TestClient(create_app(rt, kernel)), {"Authorization": f"Bearer {key}"}
    kernel.close()
    rt.close()


def _error(r) -> dict[str, object]:  # type: ignore[no-untyped-def]
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    error = r.json()["error"]
    assert {"message", "type", "code", "param"} <= set(error), error
    return error


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {**CHAT, "seed": HUGE}),
    ("/v1/completions", {"model": "m", "prompt": "hi", "seed": 2**63}),
    ("/v1/chat/completions", {**CHAT, "max_tokens": HUGE}),
    ("/v1/datasets/x/split", {"version": HUGE}),
    ("/v1/loop/m/rollback", {"to": "v1", "extra": -HUGE}),
])
def test_integers_past_64_bits_or_their_field_bounds_are_refused(client, path: str, body: dict) -> None:  # type: ignore[no-untyped-def]
    c, headers = client
    _error(c.post(path, json=body, headers=headers))


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", '{"model": "m", "messages": [{"role": "user", "content": "a\\ud800b"}]}'),
    ("/v1/completions", '{"model": "m", "prompt": "\\udfff"}'),
    ("/v1/embeddings", '{"model": "m", "input": ["ok", "\\ud800"]}'),
    ("/v1/classify", '{"model": "m", "input": ["\\ud800"], "\\udc00": 1}'),
])
def test_lone_surrogates_are_a_clear_400(client, path: str, body: str) -> None:  # type: ignore[no-untyped-def]
    c, headers = client
    r = c.post(path, content=body.encode(), headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 400 and "surrogate" in _error(r)["message"]


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"model": "\xff\xfe"}', b'{"model": '])
def test_bodies_that_do_not_parse_are_400_in_openai_shape(client, body: bytes) -> None:  # type: ignore[no-untyped-def]
    c, headers = client
    r = c.post("/v1/chat/completions", content=body, headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 400 and _error(r)["param"] == "body"


@pytest.mark.parametrize("query", ["/v1/feedback?limit=-1", f"/v1/feedback?limit={HUGE}", f"/v1/feedback?after={HUGE}",
                                   f"/v1/jobs/x/events?since={HUGE}", f"/v1/datasets/x?version={HUGE}",
                                   f"/v1/datasets/x@{HUGE}", "/v1/datasets/x@0"])
def test_query_integers_are_bounded(client, query: str) -> None:  # type: ignore[no-untyped-def]
    c, headers = client
    _error(c.get(query, headers=headers))


def test_a_page_size_of_minus_one_is_not_everything(client) -> None:  # type: ignore[no-untyped-def]
    c, headers = client
    assert c.get("/v1/feedback?limit=-1", headers=headers).status_code == 422


@pytest.mark.parametrize("auth", [True, False])
@pytest.mark.parametrize("method,path,status", [("GET", "/v1/requests", 404), ("GET", "/nothing", 404),
                                                ("PUT", "/v1/models", 405)])
def test_unknown_routes_are_404_for_everyone(client, auth: bool, method: str, path: str, status: int) -> None:  # type: ignore[no-untyped-def]
    c, headers = client
    r = c.request(method, path, headers=headers if auth else {})
    assert r.status_code == status and _error(r)["type"] in ("not_found", "method_not_allowed")


def test_models_retrieve_is_openai_shaped(client) -> None:  # type: ignore[no-untyped-def]
    c, headers = client
    error = _error(c.get("/v1/models/nope", headers=headers))
    assert error["type"] == "model_not_found" and json.dumps(error).count("nope") >= 1
