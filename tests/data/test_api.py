"""The dataset routes over FastAPI's TestClient: upload, list, show, derive, errors and tenants."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from llmos.daemon import create_app
from llmos.api.deps import Caller, get_caller
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime
from tests.data.conftest import assert_nothing_stored


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    kernel = Kernel(runtime.settings, runtime.store.registry)  # loads nothing until a model is used
    try:
        with TestClient(create_app(runtime, kernel)) as c:
            yield c
    finally:
        kernel.close()


def _upload(client: TestClient, path: Path, **form: str) -> object:
    with open(path, "rb") as fh:
        return client.post("/v1/datasets", files={"file": (path.name, fh)}, data=form)


def test_upload_show_list_and_derive(client: TestClient, head) -> None:  # type: ignore[no-untyped-def]
    r = _upload(client, head("sms_spam/SMSSpamCollection", 400), name="spam")
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["name"], body["version"], body["task"]) == ("spam", 1, "classify")
    assert body["source"]["mapping"] == {"label": "0", "text": "1"} and body["tenant"] == "default"
    assert body["preview"][0]["text"].startswith("Go until jurong point")

    r = client.post("/v1/datasets/spam/clean", json={"near_threshold": 0.9})
    assert r.status_code == 201, r.text
    assert r.json()["derivation"]["params"]["near_threshold"] == 0.9
    r = client.post("/v1/datasets/spam/split", json={"validation": 0.2, "test": 0.2, "seed": 1, "version": 1})
    assert r.status_code == 201 and r.json()["parent"] == "spam@1"
    assert r.json()["counts"]["splits"] == {"train": 240, "validation": 80, "test": 80}
    r = client.post("/v1/datasets/spam/augment", json={"copies": 1, "ops": ["swap"]})
    assert r.status_code == 201 and r.json()["parent"] == "spam@3" and r.json()["version"] == 4

    listed = client.get("/v1/datasets").json()
    assert listed["object"] == "list" and [(d["name"], d["version"]) for d in listed["data"]] == [("spam", 4)]
    assert len(client.get("/v1/datasets", params={"all_versions": True}).json()["data"]) == 4
    shown = client.get("/v1/datasets/spam", params={"version": 3, "rows": 2, "split": "test"}).json()
    assert shown["version"] == 3 and len(shown["preview"]) == 2
    assert {row["split"] for row in shown["preview"]} == {"test"}


def test_upload_with_explicit_task_mapping_and_format(client: TestClient, head) -> None:  # type: ignore[no-untyped-def]
    path = head("conll2003/valid.txt", 120)
    r = _upload(client, path, name="pos", task="tag", format="conll", mapping=json.dumps({"tags": 1}))
    assert r.status_code == 201, r.text
    assert r.json()["source"]["mapping"] == {"tags": "1", "tokens": "0"}
    r = _upload(client, path, name="ner", dry_run="true")
    assert r.status_code == 201 and r.json()["task"] == "tag" and "id" not in r.json()
    assert client.get("/v1/datasets/ner").status_code == 404  # a dry run registers nothing


def test_bad_uploads_are_clear_400s_and_store_nothing(client: TestClient, runtime: Runtime, write) -> None:  # type: ignore[no-untyped-def]
    from llmos.data import Datasets

    r = _upload(client, write("x.jsonl", '{"text": "a", "label": "p"}\n{"text": "b", "lab'), name="x")
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "import_failed"
    assert "x.jsonl: line 2 is not valid JSON" in r.json()["error"]["message"]
    r = _upload(client, write("y.csv", "text,label\na,b\n"), name="y", mapping="{not json")
    assert r.status_code == 400 and "mapping is not valid JSON" in r.json()["error"]["message"]
    r = _upload(client, write("z.csv", "text,label\na,b\n"), name="z", task="regress")
    assert r.status_code == 400 and "task: Input should be" in r.json()["error"]["message"]
    r = client.post("/v1/datasets", data={"name": "nofile"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "file"
    assert_nothing_stored(Datasets.of(runtime), runtime)  # and the uploads' temp files are gone


def test_unknown_dataset_and_bad_options(client: TestClient, write) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/v1/datasets/nope")
    assert r.status_code == 404 and "dataset 'nope' not found" in r.json()["error"]["message"]
    _upload(client, write("t.csv", "text,label\na,x\nb,y\n"), name="tiny")
    r = client.post("/v1/datasets/tiny/split", json={})
    assert r.status_code == 400 and "too few to split" in r.json()["error"]["message"]
    r = client.post("/v1/datasets/tiny/augment", json={"copies": 0})
    assert r.status_code == 422 and r.json()["error"]["param"] == "copies"


def test_tenants_cannot_see_each_other(client: TestClient, write) -> None:  # type: ignore[no-untyped-def]
    app = client.app
    path = write("t.csv", "text,label\na,x\nb,y\nc,x\n")
    app.dependency_overrides[get_caller] = lambda: Caller(tenant="a")  # type: ignore[attr-defined]
    assert _upload(client, path, name="secret").json()["tenant"] == "a"
    app.dependency_overrides[get_caller] = lambda: Caller(tenant="b")  # type: ignore[attr-defined]
    assert client.get("/v1/datasets").json()["data"] == []
    r = client.get("/v1/datasets/secret")
    assert r.status_code == 404 and "There are no datasets yet" in r.json()["error"]["message"]
    assert client.post("/v1/datasets/secret/clean", json={}).status_code == 404
    r = _upload(client, path, name="secret")
    assert r.status_code == 201 and (r.json()["tenant"], r.json()["version"]) == ("b", 1)
    app.dependency_overrides.clear()  # type: ignore[attr-defined]
    assert client.get("/v1/datasets").json()["data"] == []  # the default tenant sees neither
