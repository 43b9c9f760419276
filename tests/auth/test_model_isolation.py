"""Two tenants, every route that names a model: tenant B can neither see nor change tenant A's names.

The routes come from the app's own route table: each one is either in ``MODEL_ROUTES`` (with the
requests that name a model through it) or in ``NO_MODEL``; a new route in neither fails the first
test, so no route can be forgotten. B sends each request once with a name A owns and once with a
name nobody owns: the answers must be the same (status, and error text with the names swapped), no
answer may carry A's tenant or a name only A has, and A's models and loop policy must be exactly as
before when B is done. Engines are fakes; routes, auth, store and database are real.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from llmos.daemon import create_app
from llmos.auth import create_key
from llmos.db.tables import LoopPolicy
from llmos.engines.base import FakeEngine
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime
from tests.auth.conftest import SECURE, SMOL
from tests.conftest import make_settings
from tests.console.conftest import sign_in

CSV = ("rows.csv", "".join(f"text {i},{i % 2}\n" for i in range(24)).encode(), "text/csv")
Body = Callable[[str], Any]  # model name -> JSON body (None: no body)
JSONL = ("rows.jsonl", "".join(f'{{"text": "text {i}", "label": {i % 2}}}\n' for i in range(24)).encode(),
         "application/jsonl")
B_FILES: dict[str, str] = {}  # B's uploaded files by name (the world fixture uploads them)

# (method, path template) -> the requests that name a model, each a (path, body) pair built from the name
MODEL_ROUTES: dict[tuple[str, str], list[tuple[str, Body]]] = {
    ("GET", "/v1/models/{model_id}"): [("/v1/models/{m}", lambda m: None)],
    ("POST", "/v1/chat/completions"): [("", lambda m: {"model": m, "messages": [{"role": "user", "content": "hi"}],
                                                        "max_tokens": 2})],
    ("POST", "/v1/completions"): [("", lambda m: {"model": m, "prompt": "hi", "max_tokens": 2})],
    ("POST", "/v1/embeddings"): [("", lambda m: {"model": m, "input": "hi"})],
    ("POST", "/v1/classify"): [("", lambda m: {"model": m, "input": ["hi"]})],
    ("POST", "/v1/tag"): [("", lambda m: {"model": m, "input": ["hi"]})],
    ("POST", "/admin/load"): [("", lambda m: {"model": m})],
    ("POST", "/admin/unload"): [("", lambda m: {"model": m})],
    ("POST", "/v1/training/jobs"): [("", lambda m: {"model": m, "dataset": "rows"}),
                                    ("", lambda m: {"model": SMOL, "dataset": "rows", "name": m, "task": "classify",
                                                    "method": "lora"})],
    ("POST", "/v1/tuning/jobs"): [("", lambda m: {"model": m, "dataset": "rows", "trials": 2}),
                                  ("", lambda m: {"model": SMOL, "dataset": "rows", "name": m, "trials": 2})],
    ("POST", "/v1/evaluations"): [("", lambda m: {"model": m, "dataset": "rows"})],
    ("POST", "/v1/fine_tuning/jobs"): [("", lambda m: {"model": m, "training_file": B_FILES["rows"]})],
    ("POST", "/v1/rerank"): [("", lambda m: {"model": m, "query": "hi", "documents": ["a", "b"]})],
    ("POST", "/v1/kb"): [("", lambda m: {"name": "kb-" + uuid.uuid4().hex[:6], "embed_model": m})],
    ("GET", "/v1/feedback"): [("/v1/feedback?model={m}", lambda m: None)],
    ("PUT", "/v1/loop/{name}"): [("/v1/loop/{m}", lambda m: {"min_feedback": 3})],
    ("GET", "/v1/loop/{name}/history"): [("/v1/loop/{m}/history", lambda m: None)],
    ("POST", "/v1/loop/{name}/rollback"): [("/v1/loop/{m}/rollback", lambda m: {"to": "v1"}),
                                           ("/v1/loop/{m}/rollback", lambda m: None)],
    ("POST", "/v1/prompt_tasks"): [("", lambda m: {"name": "pt-" + uuid.uuid4().hex[:6], "base": m,
                                                   "labels": ["a", "b"]}),
                                   ("", lambda m: {"name": m, "base": "minilm-l6", "labels": ["a", "b"]})],
    ("GET", "/v1/prompt_tasks/{name}"): [("/v1/prompt_tasks/{m}", lambda m: None)],
    ("POST", "/v1/ask"): [("", lambda m: {"text": f"unload {m}"}), ("", lambda m: {"text": f"roll back {m}"}),
                          ("", lambda m: {"text": f"load {m}", "confirm": True})],
    # the console: signed in with B's key (pages and their JSON helpers)
    ("GET", "/console/models/{ref:path}"): [("/console/models/{m}", lambda m: None)],
    ("GET", "/console/api/models/{ref:path}/loss_curve.png"): [("/console/api/models/{m}/loss_curve.png",
                                                                lambda m: None)],
    ("POST", "/console/api/chat"): [("", lambda m: {"model": m, "messages": [{"role": "user", "content": "hi"}],
                                                    "max_tokens": 2})],
    ("POST", "/console/api/classify"): [("", lambda m: {"model": m, "input": ["hi"]})],
    ("POST", "/console/api/tag"): [("", lambda m: {"model": m, "input": ["hi"]})],
    ("POST", "/console/kb/ask"): [("", lambda m: {"kb": "faq", "model": m, "question": "hi"})],
}
NO_MODEL = {  # routes that take no model name (ids, datasets, listings of the caller's own things)
    ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc"),
    ("GET", "/health"), ("GET", "/admin/ps"), ("GET", "/admin/alerts"), ("GET", "/metrics"),
    ("POST", "/admin/keys"), ("GET", "/admin/keys"), ("DELETE", "/admin/keys/{key_id}"),
    ("POST", "/v1/datasets"), ("GET", "/v1/datasets"), ("GET", "/v1/datasets/{name}"),
    ("POST", "/v1/datasets/{name}/clean"), ("POST", "/v1/datasets/{name}/split"),
    ("POST", "/v1/datasets/{name}/augment"), ("GET", "/v1/models"),
    ("GET", "/v1/jobs"), ("GET", "/v1/jobs/{job_id}"), ("GET", "/v1/jobs/{job_id}/events"),
    ("GET", "/v1/jobs/{job_id}/logs"), ("POST", "/v1/jobs/{job_id}/pause"), ("POST", "/v1/jobs/{job_id}/resume"),
    ("POST", "/v1/jobs/{job_id}/cancel"), ("GET", "/v1/training/jobs"), ("GET", "/v1/training/jobs/{job_id}"),
    ("GET", "/v1/tuning/jobs"), ("GET", "/v1/evaluations"), ("GET", "/v1/tuning/jobs/{job_id}"), ("GET", "/v1/tuning/jobs/{job_id}/trials"),
    ("POST", "/v1/feedback"), ("GET", "/v1/loop"), ("POST", "/v1/loop/tick"),
    ("GET", "/v1/fine_tuning/jobs"), ("GET", "/v1/fine_tuning/jobs/{job_id}"),
    ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"), ("POST", "/v1/fine_tuning/jobs/{job_id}/pause"),
    ("POST", "/v1/fine_tuning/jobs/{job_id}/resume"), ("GET", "/v1/fine_tuning/jobs/{job_id}/events"),
    ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints"),
    ("POST", "/v1/files"), ("GET", "/v1/files"), ("GET", "/v1/files/{file_id}"),
    ("GET", "/v1/files/{file_id}/content"), ("DELETE", "/v1/files/{file_id}"),
    ("POST", "/v1/batches"), ("GET", "/v1/batches"), ("GET", "/v1/batches/{batch}"),
    ("POST", "/v1/batches/{batch}/cancel"),
    ("GET", "/v1/kb"), ("GET", "/v1/kb/{name}"), ("DELETE", "/v1/kb/{name}"), ("POST", "/v1/kb/{name}/documents"),
    ("POST", "/v1/kb/{name}/search"), ("POST", "/v1/ask/{plan_id}/run"),
    ("GET", "/"), ("GET", "/console/login"), ("POST", "/console/login"), ("POST", "/console/logout"),
    ("GET", "/console/"), ("GET", "/console/models"), ("GET", "/console/jobs"), ("GET", "/console/jobs/{job_id}"),
    ("GET", "/console/metrics"), ("GET", "/console/playground"), ("GET", "/console/datasets"),
    ("GET", "/console/datasets/{ref}"), ("GET", "/console/alerts"), ("GET", "/console/api/ps"),
    ("GET", "/console/api/stats"), ("GET", "/console/api/jobs"), ("GET", "/console/api/jobs/{job_id}"),
    ("POST", "/console/api/feedback"), ("GET", "/console/kb"),
}


def route_table(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every route of the app, included routers flattened; mounts (static files) skipped."""
    for r in routes:
        included = getattr(r, "original_router", None)
        if included is not None:
            yield from route_table(included.routes, prefix + r.include_context.prefix)  # type: ignore[attr-defined]
            continue
        for method in sorted(set(getattr(r, "methods", None) or ()) - {"HEAD"}):
            yield method, prefix + r.path  # type: ignore[attr-defined]


@dataclass
class World:
    client: TestClient  # bearer-key calls
    console: TestClient  # B signed in to the console
    runtime: Runtime
    a_tenant: str
    a_headers: dict[str, str]
    b_headers: dict[str, str]
    target: str  # a name A owns, that B will type
    hidden: str  # a name only A has; B never types it, and must never read it
    absent: str  # a name nobody has

    def a_state(self) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
        """A's models (ref, digest) and its loop policy's round state."""
        models = [(i.ref, i.digest) for i in self.runtime.store.registry.list() if i.tenant == self.a_tenant]
        with self.runtime.db.session() as s:
            row = s.get(LoopPolicy, (self.a_tenant, self.target))
            policy = {"settings": row.settings, "state": row.state} if row else None
        return models, policy


@pytest.fixture(scope="module")
def world(builtin_runtime: Runtime) -> Iterator[World]:
    s = make_settings(builtin_runtime.settings.home, database_url=builtin_runtime.settings.database_url, **SECURE)
    rt = Runtime(s, builtin_runtime.db, builtin_runtime.store)
    kernel = Kernel(s, rt.store.registry, engine_factory=lambda ref: FakeEngine(ref))
    tag = uuid.uuid4().hex[:8]
    a, b = f"iso-a-{tag}", f"iso-b-{tag}"
    scopes = ["infer", "train", "read"]
    a_key, b_key = (create_key(rt.db, tenant=t, name="iso", scopes=scopes)[1] for t in (a, b))
    registry = rt.store.registry
    smol = registry.get(SMOL, tenant=None).manifest
    w = World(TestClient(create_app(rt, kernel)), TestClient(create_app(rt, kernel)), rt, a,
              {"Authorization": f"Bearer {a_key}"}, {"Authorization": f"Bearer {b_key}"},
              f"target-{tag}", f"hidden-{tag}", f"absent-{tag}")
    for name in (w.target, w.hidden):  # A's fine-tuned-looking series: v1, v2, latest -> v2
        for v in ("v1", "v2"):
            registry.add(f"{name}:{v}", smol.model_copy(update={"source": f"{name}-{v}"}), tenant=a)
        registry.tag(f"{name}:v2", f"{name}:latest", tenant=a)
    r = w.client.put(f"/v1/loop/{w.target}", headers=w.a_headers, json={"min_feedback": 7})
    assert r.status_code == 200, r.text
    r = w.client.post("/v1/datasets", headers=w.b_headers, files={"file": CSV},
                      data={"name": "rows", "task": "classify"})
    assert r.status_code == 201, r.text
    r = w.client.post("/v1/files", headers=w.b_headers, files={"file": JSONL}, data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    B_FILES["rows"] = r.json()["id"]
    sign_in(w.console, b_key)
    yield w
    for c in (w.client, w.console):
        c.close()
    kernel.close()


def test_every_route_is_classified(world: World) -> None:
    """A new route must say whether it names a model (and be walked below) or not."""
    table = set(route_table(world.client.app.routes))  # type: ignore[attr-defined]
    unknown = table - set(MODEL_ROUTES) - NO_MODEL
    assert not unknown, f"classify these routes in MODEL_ROUTES or NO_MODEL: {sorted(unknown)}"
    assert not (set(MODEL_ROUTES) | NO_MODEL) - table, "the lists name routes the app no longer has"


def _call(world: World, method: str, template: str, path: str, body: Body, name: str) -> tuple[int, str]:
    url = (path or template).replace("{m}", name)
    client, headers = (world.console, {}) if template.startswith("/console") else (world.client, world.b_headers)
    if template.startswith("/console/api/") and method == "POST":
        headers = {"X-CSRF-Token": _csrf(world.console)}
    payload = body(name)
    r = client.request(method, url, headers=headers, json=payload) if payload is not None else (
        client.request(method, url, headers=headers))
    return r.status_code, r.text


def _csrf(client: TestClient) -> str:
    from tests.console.conftest import csrf_of

    return csrf_of(client.get("/console/").text)


def _comparable(text: str, name: str) -> str:
    """The answer with the name swapped out and what differs between any two calls (ids, times) dropped."""
    try:
        data = json.loads(text)
    except ValueError:
        return text.replace(name, "NAME")
    if isinstance(data, dict) and "error" in data:
        return json.dumps(data["error"], sort_keys=True).replace(name, "NAME")
    return "ok"  # a success: both names did the same thing in B's own namespace (checked against A below)


def test_tenant_b_can_neither_see_nor_change_tenant_a_names(world: World) -> None:
    before = world.a_state()
    assert before[1] == {"settings": before[1]["settings"], "state": "idle"} and len(before[0]) == 6  # type: ignore[index]
    problems = []
    for (method, template), requests in MODEL_ROUTES.items():
        for path, body in requests:
            theirs = _call(world, method, template, path, body, world.target)
            nobody = _call(world, method, template, path, body, world.absent)
            where = f"{method} {path or template}"
            if theirs[0] != nobody[0] or _comparable(theirs[1], world.target) != _comparable(nobody[1], world.absent):
                problems.append(f"{where}: A's name {theirs} vs an absent name {nobody}")
            if theirs[0] >= 500 or nobody[0] >= 500:
                problems.append(f"{where}: a 5xx {theirs} / {nobody}")
            for text in (theirs[1], nobody[1]):
                if world.hidden in text or world.a_tenant in text:
                    problems.append(f"{where}: names A's private model or tenant: {text[:300]}")
    assert not problems, "\n".join(problems)
    assert world.a_state() == before, "B changed A's models or loop policy"
    r = world.client.get(f"/v1/models/{world.target}", headers=world.a_headers)  # A still reads its own
    assert r.status_code == 200 and r.json()["owned_by"] == world.a_tenant


def test_nothing_b_lists_names_a(world: World) -> None:
    for path in ("/v1/models", "/v1/loop", "/v1/feedback", "/v1/training/jobs", "/v1/jobs"):
        r = world.client.get(path, headers=world.b_headers)
        assert r.status_code == 200 and world.hidden not in r.text and world.a_tenant not in r.text, (path, r.text)
    for path in ("/console/models", "/console/api/ps", "/console/", "/console/api/stats"):
        r = world.console.get(path)
        assert r.status_code == 200 and world.hidden not in r.text and world.a_tenant not in r.text, (path, r.text)


def test_two_tenants_models_of_one_name_never_share_a_metrics_series(world: World) -> None:
    registry, name = world.runtime.store.registry, f"same-{uuid.uuid4().hex[:8]}"
    b_tenant = "iso-b-" + world.a_tenant.removeprefix("iso-a-")
    smol = registry.get(SMOL, tenant=None).manifest
    for tenant in (world.a_tenant, b_tenant):
        registry.add(f"{name}:latest", smol.model_copy(update={"source": tenant}), tenant=tenant)
    calls = {world.a_tenant: 2, b_tenant: 1}
    for tenant, headers in ((world.a_tenant, world.a_headers), (b_tenant, world.b_headers)):
        for _ in range(calls[tenant]):
            r = world.client.post("/v1/chat/completions", headers=headers,
                                  json={"model": name, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
    admin = create_key(world.runtime.db, tenant="iso-admin", name="iso-admin", scopes=["admin"])[1]
    text = world.client.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).text
    for tenant, n in calls.items():
        line = f'llmos_requests_total{{model="{tenant}/{name}:latest",route="chat",status="200"}} {float(n)}'
        assert line in text, text
    assert f'model="{name}:latest"' not in text


def test_a_loop_judge_must_be_a_chat_model_the_tenant_sees(world: World) -> None:
    """PUT /v1/loop/NAME checks the judge at the edge: a name the tenant cannot read, or a model that is
    no chat model, is a 400 naming `judge`, and the policy keeps its old settings."""
    put = lambda judge: world.client.put(f"/v1/loop/{world.target}", headers=world.a_headers,  # noqa: E731
                                         json={"judge": judge})
    for bad, why in ((world.absent, "is not a stored model"), ("minilm-l6", "is not a chat model")):
        r = put(bad)
        assert r.status_code == 400 and r.json()["error"]["param"] == "judge" and why in r.json()["error"]["message"]
    ok = put(world.hidden)  # the tenant's own chat model
    assert ok.status_code == 200 and ok.json()["settings"]["judge"] == world.hidden, ok.text
    put(None)
