"""``llmos ask`` for API keys, dataset import and knowledge-base documents, with the real built-in models
and real data: keys are made and revoked through ``/admin/keys`` (refused for a non-admin key, nothing
made), a slice of SST-2 written on "the caller's machine" is imported by ``llmos ask`` itself, a document
is added to a knowledge base, and an uploaded file's id works over HTTP alone."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from llmos.auth import create_key, list_keys
from llmos.daemon import create_app
from llmos.runtime import Runtime
from tests.conftest import make_settings

pytestmark = pytest.mark.slow
SST2 = Path("/work/shared/datasets/sst2/train.tsv")


@dataclass
class World:
    client: TestClient
    runtime: Runtime
    tenant: str
    admin: dict[str, str]
    trainer: dict[str, str]

    def ask(self, text: str, headers: dict[str, str] | None = None, **extra: object) -> dict[str, object]:
        r = self.client.post("/v1/ask", headers=headers or self.admin, json={"text": text, **extra})
        assert r.status_code == 200, r.text
        return r.json()

    def cli_env(self, url: str, headers: dict[str, str]) -> dict[str, str]:
        return {"LLMOS_HOME": str(self.runtime.settings.home), "LLMOS_PORT": url.rsplit(":", 1)[1],
                "LLMOS_API_KEY": headers["Authorization"].removeprefix("Bearer "), "COLUMNS": "200"}


@pytest.fixture(scope="module")
def world(builtin_runtime: Runtime) -> Iterator[World]:
    s = make_settings(builtin_runtime.settings.home, database_url=builtin_runtime.settings.database_url, auth="on")
    rt = Runtime(s, builtin_runtime.db, builtin_runtime.store)
    tenant = f"askf-{uuid.uuid4().hex[:8]}"
    admin = create_key(rt.db, tenant=tenant, name="admin", scopes=["admin"])[1]
    trainer = create_key(rt.db, tenant=tenant, name="trainer", scopes=["read", "train"])[1]
    with TestClient(create_app(rt)) as client:
        yield World(client, rt, tenant, {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {trainer}"})


def _sst2_slice(folder: Path, rows: int = 30) -> Path:
    lines = SST2.read_text(encoding="utf-8").splitlines()[: rows + 1]  # the header and the first rows
    out = folder / "sst2_slice.tsv"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def test_ask_creates_lists_and_revokes_a_key(world: World) -> None:
    other = f"team-{uuid.uuid4().hex[:6]}"
    plan = world.ask(f"create an api key for tenant {other} with read and inference scopes named ci")
    assert plan["status"] == "planned", plan
    assert [(s["operation"], s["arguments"]) for s in plan["steps"]] == [
        ("create_key", {"scopes": ["read", "infer"], "tenant": other, "name": "ci"})]
    done = world.client.post(f"/v1/ask/{plan['id']}/run", headers=world.admin).json()
    assert done["status"] == "done", done
    made = done["results"][0]["result"]
    assert made["tenant"] == other and made["key"].startswith("llmos-")
    assert world.client.get("/v1/models", headers={"Authorization": f"Bearer {made['key']}"}).status_code == 200

    listed = world.ask("list the api keys", confirm=True)
    assert listed["status"] == "done" and made["id"] in {k["id"] for k in listed["results"][0]["result"]["data"]}
    assert made["key"] not in json.dumps(listed)

    revoked = world.ask(f"revoke {made['id']}", confirm=True)
    assert revoked["status"] == "done" and revoked["steps"][0]["call"]["path"] == f"/admin/keys/{made['id']}"
    assert world.client.get("/v1/models", headers={"Authorization": f"Bearer {made['key']}"}).status_code == 401


def test_ask_refuses_a_key_to_a_non_admin_and_makes_none(world: World) -> None:
    before = len(list_keys(world.runtime.db))
    answer = world.ask("create a new api key with the admin scope", headers=world.trainer, confirm=True)
    assert answer["status"] == "refused" and answer["results"] == [] and answer["id"] is None
    assert "admin" in answer["message"] and "Nothing was run" in answer["message"]
    assert len(list_keys(world.runtime.db)) == before


def test_llmos_ask_imports_a_local_file_as_a_dataset(world: World, tmp_path: Path) -> None:
    from llmos.cli import app as cli
    from tests.api.server import serving

    data = _sst2_slice(tmp_path)
    name = f"sst2-{uuid.uuid4().hex[:6]}"
    with serving(create_app(world.runtime)) as url:
        env = world.cli_env(url, world.trainer)
        ran = CliRunner().invoke(cli, ["ask", f"import {data} as {name}", "--yes"], env=env)
        assert ran.exit_code == 0, ran.output
        assert "<- " in ran.stdout and "sst2_slice.tsv" in ran.stdout and ": done" in ran.stdout
        missing = CliRunner().invoke(cli, ["ask", f"import {tmp_path / 'absent.tsv'} as {name}"], env=env)
        assert missing.exit_code == 2 and "cannot find the file" in missing.stdout
    shown = world.client.get(f"/v1/datasets/{name}", headers=world.trainer)
    assert shown.status_code == 200, shown.text
    info = shown.json()
    assert info["counts"]["rows"] == 30 and info["task"] == "classify" and set(info["labels"]) == {"0", "1"}


def test_llmos_ask_adds_a_local_document_to_a_kb(world: World, tmp_path: Path) -> None:
    from llmos.cli import app as cli
    from tests.api.server import serving

    kb = f"notes-{uuid.uuid4().hex[:6]}"
    assert world.client.post("/v1/kb", headers=world.trainer, json={"name": kb}).status_code == 201
    doc = tmp_path / "card_delivery.md"
    doc.write_text("# Card delivery\n\nA new card arrives within five working days of the order.\n", encoding="utf-8")
    with serving(create_app(world.runtime)) as url:
        ran = CliRunner().invoke(cli, ["ask", f"add {doc} to the {kb} knowledge base", "--yes"],
                                 env=world.cli_env(url, world.trainer))
        assert ran.exit_code == 0, ran.output
    found = world.client.post(f"/v1/kb/{kb}/search", headers=world.trainer,
                              json={"query": "when does my card arrive", "k": 1}).json()
    assert "five working days" in json.dumps(found)


def test_an_uploaded_file_id_imports_over_http_and_a_local_path_is_refused_there(world: World, tmp_path: Path) -> None:
    rows = [json.dumps({"text": line.split("\t")[0].strip(), "label": line.split("\t")[1]})
            for line in SST2.read_text(encoding="utf-8").splitlines()[1:31]]
    up = world.client.post("/v1/files", headers=world.trainer, data={"purpose": "fine-tune"},
                           files={"file": ("reviews.jsonl", ("\n".join(rows) + "\n").encode(), "application/jsonl")})
    assert up.status_code == 200, up.text
    fid = up.json()["id"]
    name = f"rev-{uuid.uuid4().hex[:6]}"
    done = world.ask(f"import {fid} as {name}", headers=world.trainer, confirm=True)
    assert done["status"] == "done", done
    assert done["results"][0]["result"]["counts"]["rows"] == 30

    data = _sst2_slice(tmp_path)
    plan = world.ask(f"import {data} as {name}", headers=world.trainer, local_files=[str(data)])
    assert plan["status"] == "planned" and plan["steps"][0]["call"]["upload"]["path"] == str(data)
    r = world.client.post(f"/v1/ask/{plan['id']}/run", headers=world.trainer)  # the daemon cannot read it
    assert r.status_code == 400 and "llmos ask" in r.json()["error"]["message"]
    absent = world.ask(f"import {tmp_path / 'nope.csv'}", headers=world.trainer)
    assert absent["status"] == "question" and "nope.csv" in absent["message"]
