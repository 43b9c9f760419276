"""Hostile requests against every route of the daemon's own OpenAPI schema (schemathesis), sent with
no key and with a key of each scope: never a 5xx, never a stack trace in a body, and every documented
response matches its schema. Engines are fakes (the routes, validation, auth and store are real), so a
bounded number of examples per route runs in about a minute."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from llmos.daemon import create_app
from llmos.auth.keys import create_key
from llmos.auth.scopes import SCOPES
from llmos.engines.base import FakeEngine
from llmos.kernel.core import Kernel
from llmos.runtime import open_runtime
from tests.conftest import make_settings

pytestmark = pytest.mark.slow
EXAMPLES = 5  # per route and generation mode: one with no key, one with a key of each scope
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


CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, no_stack_trace]
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
