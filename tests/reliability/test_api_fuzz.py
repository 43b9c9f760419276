"""Hostile requests against every route of the daemon's own OpenAPI schema (schemathesis), sent with
no key and with a key of each scope: never a 5xx, never a stack trace in a body, every error in
OpenAI's shape, never another tenant's model name, and every documented response matches its schema.
A second pass sends bodies and query strings built to break parsers and databases (integers past 64
bits, lone surrogates, deep nesting) to every route that takes them. Engines are fakes (the routes,
validation, auth and store are real), so the bounded number of examples runs in a minute or two."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from urllib.parse import quote
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from fastapi.testclient import TestClient
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from llmos.daemon import create_app
from llmos.auth.keys import create_key
from llmos.auth.scopes import SCOPES
from llmos.engines.base import FakeEngine
from llmos.kernel.core import Kernel
from llmos.runtime import open_runtime
from llmos.store.manifest import ManifestData
from tests.conftest import make_settings

pytestmark = pytest.mark.slow
EXAMPLES = 3  # per route and generation mode; the keys (none, each scope) are taken in turn
HOSTILE_EXAMPLES = 6  # per route, in the hostile pass
FOREIGN = "foreign-secret-model"  # another tenant's private model: no fuzz key may ever read its name
LEAKS = ("Traceback (most recent call last)", 'File "/', "site-packages", "sqlalchemy.exc", ".py\", line")


@dataclass
class Target:
    app: FastAPI
    keys: list[str | None]  # None: no Authorization header


@pytest.fixture(scope="module")
def target(home: Path) -> Iterator[Target]:
    """The daemon's app with auth on, fake engines, and one key per scope (plus no key at all)."""
    rt = open_runtime(make_settings(home, auth="on", max_queue=4), builtins=False)
    kernel = Kernel(rt.settings, rt.store.registry, engine_factory=lambda ref: FakeEngine(ref))
    rt.store.registry.add(f"{FOREIGN}:latest", ManifestData(files=[], architecture="BertModel", tasks=["embed"],
                                                            source="fuzz"), tenant="another-tenant")
    keys: list[str | None] = [None]
    for scope in SCOPES:
        keys.append(create_key(rt.db, tenant="fuzz", name=f"fuzz-{scope}", scopes=[scope])[1])
    yield Target(create_app(rt, kernel), keys)  # lifespan not started: no job runner ever spawns
    kernel.close()
    rt.close()


def no_stack_trace(ctx, response, case) -> None:  # type: ignore[no-untyped-def]
    """A body never carries a traceback, source paths or driver messages (they belong in the log)."""
    body = response.text or ""
    leaked = [marker for marker in LEAKS if marker in body]
    assert not leaked, f"{case.method} {case.path} leaked {leaked} in its body: {body[:400]}"


def openai_error_shape(ctx, response, case) -> None:  # type: ignore[no-untyped-def]
    """Every 4xx and 5xx answers ``{"error": {"message", "type", "code", "param"}}``."""
    check_error_shape(f"{case.method} {case.path}", response.status_code, response.text,
                      response.headers.get("content-type", ""))


def no_foreign_names(ctx, response, case) -> None:  # type: ignore[no-untyped-def]
    assert FOREIGN not in (response.text or ""), f"{case.method} {case.path} named another tenant's model"


def check_error_shape(where: str, status: int, text: str, content_type: str) -> None:
    if status < 400 or "html" in content_type:  # the console's pages answer errors as pages
        return
    try:
        error = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"{where}: {status} is not an OpenAI error object: {text[:300]}") from None
    assert {"message", "type", "code", "param"} <= set(error), f"{where}: {status} error lacks fields: {error}"


CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, no_stack_trace,
          openai_error_shape, no_foreign_names]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)  # well-formed requests, and ones that break the schema


def fuzz(operation, target: Target, mode: GenerationMode) -> str | None:  # type: ignore[no-untyped-def]
    """Up to a few examples of ``operation`` in ``mode``, each sent with every key; the first failure."""

    @given(operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    def run(case) -> None:  # type: ignore[no-untyped-def]
        key = target.keys[next(turn) % len(target.keys)]  # examples take the keys in turn
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        case.call_and_validate(headers=headers, checks=CHECKS)

    turn = itertools.count()
    try:
        run()
    except Unsatisfiable:
        return None  # nothing in this route can be made invalid (no parameters, or only free strings)
    except Exception as exc:  # noqa: BLE001 - gathered, so one run names every broken route
        return f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}"[:1500]
    return None


def test_no_route_breaks_on_hostile_input(target: Target) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", target.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30  # every route of the daemon, not an empty schema
    failures = [f for op in operations for mode in MODES if (f := fuzz(op, target, mode))]
    assert not failures, "\n\n".join(failures)


# -- the hostile pass: what breaks parsers, drivers and tokenizers ------------------------------------
HUGE = st.one_of(st.integers(min_value=2**63, max_value=2**200), st.integers(max_value=-(2**63) - 1),
                 st.sampled_from([2**64, -1, 0, 2**31, 2**53 + 1]))
SURROGATE = st.builds(lambda a, s, b: a + s + b, st.text(max_size=8),
                      st.sampled_from(["\ud800", "\udfff", "\udc00\ud800"]), st.text(max_size=8))
SURROGATE_KEY = "key\udfff"
LEAF = st.one_of(HUGE, SURROGATE, st.text(max_size=20), st.booleans(), st.none(), st.floats(allow_nan=False))


@st.composite
def hostile_body(draw: st.DrawFn, fields: list[str]) -> bytes:
    """A JSON object of the route's own fields (and a stray one) set to hostile values, or a deep nest."""
    depth = draw(st.sampled_from([0, 0, 0, 65, 5000]))
    if depth:
        return ("[" * depth + "]" * depth).encode()
    keys = draw(st.lists(st.sampled_from(fields + ["model", "seed", "limit", SURROGATE_KEY]), min_size=1,
                         max_size=4, unique=True))
    nested = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=3), max_leaves=4)
    return json.dumps({k: draw(nested) for k in keys}).encode()  # ensure_ascii keeps surrogates as escapes


def _body_fields(operation) -> list[str]:  # type: ignore[no-untyped-def]
    body = (operation.definition.raw.get("requestBody") or {}).get("content", {}).get("application/json", {})
    ref = body.get("schema", {}).get("$ref", "")
    schema = operation.schema.raw_schema["components"]["schemas"].get(ref.rsplit("/", 1)[-1], {}) if ref else {}
    return sorted(schema.get("properties", {})) or ["input"]


def _query_fields(operation) -> list[str]:  # type: ignore[no-untyped-def]
    return [p["name"] for p in operation.definition.raw.get("parameters", []) if p.get("in") == "query"]


def _hostile(client: TestClient, target: Target, operation) -> str | None:  # type: ignore[no-untyped-def]
    method, path = operation.method.upper(), operation.path.replace("{", "").replace("}", "")
    fields, queries = _body_fields(operation), _query_fields(operation)
    takes_body = "requestBody" in operation.definition.raw
    if not takes_body and not queries:
        return None
    turn = itertools.count()

    @given(body=hostile_body(fields), number=HUGE, text=SURROGATE)
    @settings(max_examples=HOSTILE_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    def run(body: bytes, number: int, text: str) -> None:
        key = target.keys[next(turn) % len(target.keys)]
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        raw = text.encode("utf-8", "surrogatepass")  # what a client that sends lone surrogates puts on the wire
        query = "&".join(f"{q}={quote(str(number)) if i % 2 == 0 else quote(raw)}" for i, q in enumerate(queries))
        url = f"{path}?{query}" if query else path
        if takes_body:
            headers["Content-Type"] = "application/json"
            r = client.request(method, url, content=body, headers=headers)
        else:
            r = client.request(method, url, headers=headers)
        where = f"{method} {url[:120]} {body[:80]!r}"
        assert r.status_code < 500, f"{where}: {r.status_code} {r.text[:300]}"
        check_error_shape(where, r.status_code, r.text, r.headers.get("content-type", ""))
        assert FOREIGN not in r.text, f"{where}: named another tenant's model"

    try:
        run()
    except Exception as exc:  # noqa: BLE001 - gathered, so one run names every broken route
        return f"{method} {operation.path} (hostile): {exc}"[:1500]
    return None


def test_no_route_breaks_on_huge_integers_surrogates_or_deep_nesting(target: Target) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", target.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    client = TestClient(target.app)  # no lifespan: no job runner ever spawns
    failures = [f for op in operations if (f := _hostile(client, target, op))]
    assert not failures, "\n\n".join(failures)
