"""OpenAI's files and fine-tuning routes through the official client, auth on, two tenants: uploads are
checked line by line, a file or job of another tenant is a 404, a bad training file queues nothing.

The app has no lifespan here, so no runner starts the jobs these tests queue: what is checked is the
request path (files, import, plan, job record) and the shapes, not training (tests/train does that).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from llmos.daemon import create_app
from llmos.data import Datasets
from llmos.runtime import Runtime
from tests.auth.conftest import SECURE, MakeKey
from tests.conftest import make_settings

MINILM = "minilm-l6"


@pytest.fixture(scope="module")
def sst2_jsonl(datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """40 SST-2 training rows as text / label JSONL."""
    lines = (datasets / "sst2/train.tsv").read_text(encoding="utf-8").splitlines()[1:41]
    rows = [dict(zip(("text", "label"), line.rsplit("\t", 1))) for line in lines]
    return "".join(json.dumps({"text": r["text"].strip(), "label": int(r["label"])}) + "\n" for r in rows).encode()


@pytest.fixture
def app_client(builtin_runtime: Runtime, fake_kernel_factory) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    s = make_settings(builtin_runtime.settings.home, database_url=builtin_runtime.settings.database_url,
                      **{**SECURE, "max_file_bytes": "4KiB"})
    client = TestClient(create_app(Runtime(s, builtin_runtime.db, builtin_runtime.store),
                                   fake_kernel_factory(**SECURE)))
    yield client
    client.close()


def oai(client: TestClient, key: str) -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)


def test_upload_list_read_delete_and_another_tenant_sees_nothing(app_client: TestClient, make_key: MakeKey,
                                                                 sst2_jsonl: bytes) -> None:
    a, b = make_key("train"), make_key("train", "read")
    mine, theirs = oai(app_client, a.raw), oai(app_client, b.raw)
    f = mine.files.create(file=("sst2.jsonl", sst2_jsonl), purpose="fine-tune")
    assert f.id.startswith("file-") and f.object == "file" and f.bytes == len(sst2_jsonl)
    assert f.filename == "sst2.jsonl" and f.purpose == "fine-tune" and f.status == "processed"
    assert [x.id for x in mine.files.list()] == [f.id]
    assert mine.files.retrieve(f.id).bytes == len(sst2_jsonl)
    assert mine.files.content(f.id).content == sst2_jsonl

    assert list(theirs.files.list()) == []
    for call in (lambda: theirs.files.retrieve(f.id), lambda: theirs.files.content(f.id),
                 lambda: theirs.files.delete(f.id)):
        with pytest.raises(openai.NotFoundError) as err:
            call()
        assert err.value.body["param"] == "file_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as err:
        theirs.fine_tuning.jobs.create(model=MINILM, training_file=f.id)
    assert err.value.body["param"] == "training_file" and f.id in err.value.body["message"]  # type: ignore[index]
    assert list(theirs.fine_tuning.jobs.list()) == []

    gone = mine.files.delete(f.id)
    assert gone.id == f.id and gone.deleted
    with pytest.raises(openai.NotFoundError):
        mine.files.retrieve(f.id)


@pytest.mark.parametrize("content,line,what", [
    (b'{"text": "a", "label": 1}\n{"text": "b", "label": 0\n', 2, "not valid JSON"),
    (b'{"text": "a", "label": 1}\n\n["text", "b"]\n', 3, "not an object"),
    (b'{"text": "a", "label": 1}\n\xff\xfe\n', 2, "not UTF-8"),
])
def test_an_upload_with_a_bad_line_is_refused_naming_it(app_client: TestClient, make_key: MakeKey, content: bytes,
                                                        line: int, what: str) -> None:
    client = oai(app_client, make_key("train").raw)
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("bad.jsonl", content), purpose="fine-tune")
    message = err.value.body["message"]  # type: ignore[index]
    assert f"bad.jsonl: line {line}" in message and what in message
    assert list(client.files.list()) == []  # nothing stored


def test_purpose_and_size_are_checked(app_client: TestClient, make_key: MakeKey) -> None:
    client = oai(app_client, make_key("infer").raw)
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("a.jsonl", b'{"a": 1}\n'), purpose="assistants")
    assert err.value.body["param"] == "purpose"  # type: ignore[index]
    big = b"".join(json.dumps({"text": "x" * 90, "i": i}).encode() + b"\n" for i in range(60))  # > 4 KiB
    with pytest.raises(openai.APIStatusError) as too_big:
        client.files.create(file=("big.jsonl", big), purpose="batch")
    assert too_big.value.status_code == 413 and "LLMOS_MAX_FILE_BYTES" in too_big.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("a.jsonl", b'{"a": 1}\n'), purpose="batch",
                            expires_after={"anchor": "created_at", "seconds": 3600})
    assert err.value.body["param"].startswith("expires_after")  # type: ignore[index]
    assert client.files.create(file=("a.jsonl", b'{"a": 1}\n'), purpose="batch").purpose == "batch"


def test_a_fine_tune_is_queued_listed_cancelled_and_its_events_read(app_client: TestClient, make_key: MakeKey,
                                                                     sst2_jsonl: bytes,
                                                                     builtin_runtime: Runtime) -> None:
    key = make_key("train")
    client = oai(app_client, key.raw)
    f = client.files.create(file=("sst2.jsonl", sst2_jsonl), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MINILM, training_file=f.id, suffix="sent", seed=7,
                                         hyperparameters={"n_epochs": 2, "batch_size": 8,
                                                          "learning_rate_multiplier": 2},
                                         metadata={"team": "nlp"})
    assert job.object == "fine_tuning.job" and job.status == "queued" and job.model == MINILM
    assert job.training_file == f.id and job.validation_file is None and job.fine_tuned_model is None
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 8
    assert job.hyperparameters.learning_rate_multiplier == 2 and job.seed == 7
    assert job.metadata == {"team": "nlp"} and job.organization_id == key.tenant
    extra = job.model_extra["llmos"]  # type: ignore[index]
    assert extra["task"] == "classify" and extra["method"] == "full"
    assert Datasets(builtin_runtime.db, builtin_runtime.store.blobs, builtin_runtime.settings.locks_dir,
                    key.tenant).get(f.id).counts.rows == 40  # the file became the tenant's dataset
    second = client.fine_tuning.jobs.create(model=MINILM, training_file=f.id)  # the same file: imported once
    assert second.model_extra["llmos"]["dataset"] == extra["dataset"]  # type: ignore[index]

    assert [j.id for j in client.fine_tuning.jobs.list()] == [second.id, job.id]  # newest first
    page = client.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in page.data] == [second.id] and page.has_more
    assert [j.id for j in client.fine_tuning.jobs.list(after=second.id)] == [job.id]
    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id

    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    events = list(client.fine_tuning.jobs.list_events(job.id))
    assert [e.message for e in events] == ["Job cancelled at the user's request", "Job queued"]  # newest first
    assert events[0].object == "fine_tuning.job.event" and events[0].level == "info"
    assert list(client.fine_tuning.jobs.checkpoints.list(job.id)) == []
    paused = client.fine_tuning.jobs.pause(second.id)
    assert paused.status == "paused"
    assert client.fine_tuning.jobs.resume(second.id).status == "queued"
    client.fine_tuning.jobs.cancel(second.id)  # nothing left queued for a later test's daemon to start
    with pytest.raises(openai.NotFoundError):
        oai(app_client, make_key("train").raw).fine_tuning.jobs.retrieve(job.id)  # another tenant


@pytest.mark.parametrize("body,param", [
    ({"method": {"type": "dpo"}}, "method.type"),
    ({"hyperparameters": {"n_epochs": 1, "dropout_everywhere": 0.5}}, "hyperparameters.dropout_everywhere"),
    ({"hyperparameters": {"n_epochs": 1, "epochs": 2}}, "hyperparameters.epochs"),
    ({"integrations": [{"type": "wandb", "wandb": {"project": "p"}}]}, "integrations"),
    ({"hyperparameters": {"n_epochs": 1},
      "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}}, "hyperparameters"),
    ({"temperature": 1}, "temperature"),
])
def test_fields_llmos_cannot_honour_are_400s_naming_them(app_client: TestClient, make_key: MakeKey,
                                                         sst2_jsonl: bytes, body: dict, param: str) -> None:
    client = oai(app_client, make_key("train").raw)
    f = client.files.create(file=("sst2.jsonl", sst2_jsonl), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model=MINILM, training_file=f.id, extra_body=body)
    assert err.value.body["param"] == param, err.value.body  # type: ignore[index]
    assert list(client.fine_tuning.jobs.list()) == []


def test_a_training_file_with_a_malformed_line_queues_nothing(app_client: TestClient, make_key: MakeKey,
                                                              builtin_runtime: Runtime) -> None:
    key = make_key("train")
    client = oai(app_client, key.raw)
    chat = [{"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": str(i)}]}
            for i in range(12)]
    chat[6] = {"messages": [{"role": "user", "content": "Hi."}, {"role": "robot", "content": "beep"}]}
    f = client.files.create(file=("chat.jsonl", "".join(json.dumps(r) + "\n" for r in chat).encode()),
                            purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=f.id)
    body = err.value.body
    assert "chat.jsonl: line 7" in body["message"] and "robot" in body["message"]  # type: ignore[index]
    assert body["param"] == "training_file"  # type: ignore[index]
    assert list(client.fine_tuning.jobs.list()) == []
    ds = Datasets(builtin_runtime.db, builtin_runtime.store.blobs, builtin_runtime.settings.locks_dir, key.tenant)
    assert ds.list() == []  # nothing half-imported
