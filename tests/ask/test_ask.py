"""`POST /v1/ask` with the real built-in models (MiniLM-L6 picks the operation, SmolLM2 fills what the
words leave open): a confirmed plan runs through the daemon's own routes, a key without the scope gets a
refusal and nothing runs, an unclear request gets a question, a failing step stops the plan."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from llmos.auth import create_key, list_audit
from llmos.daemon import create_app
from llmos.runtime import Runtime
from tests.conftest import make_settings

pytestmark = pytest.mark.slow
MINILM = "minilm-l6"


@dataclass
class World:
    client: TestClient
    runtime: Runtime
    tenant: str
    admin: dict[str, str]
    reader: dict[str, str]

    def ask(self, text: str, headers: dict[str, str] | None = None, **extra: object) -> dict[str, object]:
        r = self.client.post("/v1/ask", headers=headers or self.admin, json={"text": text, **extra})
        assert r.status_code == 200, r.text
        return r.json()

    def loaded(self) -> set[str]:
        ps = self.client.get("/admin/ps", headers=self.admin).json()
        return {m["model"].split(":")[0] for m in ps["models"] if m["loaded"]}

    def steps_audited(self) -> list[str]:
        return [e.target or "" for e in list_audit(self.runtime.db, tenant=self.tenant, action="ask.step")]


@pytest.fixture(scope="module")
def world(builtin_runtime: Runtime) -> Iterator[World]:
    s = make_settings(builtin_runtime.settings.home, database_url=builtin_runtime.settings.database_url, auth="on")
    rt = Runtime(s, builtin_runtime.db, builtin_runtime.store)
    tenant = f"ask-{uuid.uuid4().hex[:8]}"
    admin = create_key(rt.db, tenant=tenant, name="admin", scopes=["admin"])[1]
    reader = create_key(rt.db, tenant=tenant, name="reader", scopes=["read"])[1]
    with TestClient(create_app(rt)) as client:
        yield World(client, rt, tenant, {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {reader}"})


def test_a_confirmed_plan_loads_lists_and_unloads(world: World) -> None:
    plan = world.ask(f"load {MINILM}, then list my jobs")
    assert plan["status"] == "planned" and plan["results"] == []
    assert [(s["operation"], s["arguments"]) for s in plan["steps"]] == [("load_model", {"model": MINILM}),
                                                                         ("list_jobs", {})]
    r = world.client.post(f"/v1/ask/{plan['id']}/run", headers=world.admin)
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "done" and [x["ok"] for x in done["results"]] == [True, True]
    assert done["results"][1]["result"]["object"] == "list"
    assert MINILM in world.loaded()
    again = world.client.post(f"/v1/ask/{plan['id']}/run", headers=world.admin)  # a plan runs once
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    unloaded = world.ask(f"unload {MINILM}", confirm=True)  # confirmed in the request itself
    assert unloaded["status"] == "done" and unloaded["results"][0]["result"]["unloaded"] is True
    assert MINILM not in world.loaded()
    assert world.steps_audited()[:3] == ["POST /admin/unload", "GET /v1/jobs", "POST /admin/load"]


def test_a_key_without_the_scope_is_refused_and_nothing_runs(world: World) -> None:
    before = world.steps_audited()
    answer = world.ask("load smollm2", headers=world.reader, confirm=True)
    assert answer["status"] == "refused" and answer["id"] is None and answer["results"] == []
    assert "admin" in answer["message"] and "Nothing was run" in answer["message"]
    assert world.steps_audited() == before and "smollm2-135m-instruct" not in world.loaded()
    listing = world.ask("list my models", headers=world.reader)  # what the key may do is planned
    assert listing["status"] == "planned"
    other = world.client.post(f"/v1/ask/{listing['id']}/run", headers=world.admin)  # another key's plan
    assert other.status_code == 404


def test_unclear_requests_get_a_question_back(world: World) -> None:
    unknown = world.ask("unload gpt-9")
    assert unknown["status"] == "question" and unknown["id"] is None
    assert {MINILM, "smollm2-135m-instruct"} <= set(unknown["options"])
    nonsense = world.ask("make me a sandwich")
    assert nonsense["status"] == "question" and nonsense["steps"] == []


def test_a_failing_step_stops_the_plan_and_says_what_ran(world: World) -> None:
    kb = f"kb-{uuid.uuid4().hex[:6]}"
    assert world.client.post("/v1/kb", headers=world.admin, json={"name": kb}).status_code == 201
    plan = world.ask(f"search {kb} for card delivery, then list my jobs")
    assert [s["operation"] for s in plan["steps"]] == ["search_kb", "list_jobs"]
    assert plan["steps"][0]["arguments"] == {"kb": kb, "query": "card delivery"}
    assert world.client.delete(f"/v1/kb/{kb}", headers=world.admin).status_code == 200  # gone before the run
    before = len(world.steps_audited())
    failed = world.client.post(f"/v1/ask/{plan['id']}/run", headers=world.admin).json()
    assert failed["status"] == "failed" and len(failed["results"]) == 1
    assert failed["results"][0]["status"] == 404 and not failed["results"][0]["ok"]
    assert "1 later step(s) not run" in failed["message"]
    assert len(world.steps_audited()) == before + 1


def test_bad_input_is_a_400_in_openai_shape(world: World) -> None:
    for body in ({"text": ""}, {"text": "x" * 1001}, {"text": "list my models", "extra": 1}, {}):
        r = world.client.post("/v1/ask", headers=world.admin, json=body)
        assert r.status_code in (400, 422), r.text
        assert set(r.json()["error"]) >= {"message", "type", "code", "param"}


def test_the_chat_model_fills_open_arguments_as_a_valid_call(world: World) -> None:
    """What the words leave open is written by SmolLM2 under the call's schema: the known name stays as
    it was, the open value has the schema's type and bounds, whatever the model would rather write."""
    from llmos.ask import llm
    from llmos.ask.ops import BY_NAME

    op = BY_NAME["search_kb"]
    query = next(p for p in op.params if p.name == "query")
    kernel = world.client.app.state.kernel  # type: ignore[attr-defined]
    args = asyncio.run(llm.complete(kernel, op, {"kb": "faq"}, [query], "look up refunds in faq", world.tenant))
    assert args is not None and set(args) == {"kb", "query"} and args["kb"] == "faq"
    assert isinstance(args["query"], str) and 1 <= len(args["query"]) <= 200
    tune = BY_NAME["tune"]
    trials = next(p for p in tune.params if p.name == "trials")
    args = asyncio.run(llm.complete(kernel, tune, {"model": MINILM, "dataset": "intents"}, [trials],
                                    "tune minilm on intents with a dozen trials", world.tenant))
    assert args is not None and args["model"] == MINILM and isinstance(args["trials"], int) and 1 <= args["trials"] <= 200


def test_the_cli_shows_the_plan_and_runs_it_only_once_confirmed(world: World) -> None:
    from typer.testing import CliRunner

    from llmos.cli import app as cli
    from tests.api.server import serving

    key = world.admin["Authorization"].removeprefix("Bearer ")
    with serving(create_app(world.runtime)) as url:
        env = {"LLMOS_HOME": str(world.runtime.settings.home), "LLMOS_PORT": url.rsplit(":", 1)[1],
               "LLMOS_API_KEY": key, "COLUMNS": "200"}
        before = len(world.steps_audited())
        declined = CliRunner().invoke(cli, ["ask", "list my jobs"], input="n\n", env=env)
        assert declined.exit_code == 0, declined.output
        assert "1. list the background jobs" in declined.stdout and "Nothing was run." in declined.stdout
        assert len(world.steps_audited()) == before
        ran = CliRunner().invoke(cli, ["ask", "list my jobs", "--yes"], env=env)
        assert ran.exit_code == 0 and "list the background jobs: done" in ran.stdout, ran.output
        assert len(world.steps_audited()) == before + 1
        asked = CliRunner().invoke(cli, ["ask", "unload gpt-9"], env=env)
        assert asked.exit_code == 2 and "Which model" in asked.stdout
