"""OpenAI's Batches API through the official client, on the real SmolLM2 behind a real daemon: the
batch runs as a background job whose runner calls the daemon's own routes as the batch's key; a bad
line goes to the error file and the rest run; a cancel keeps what finished; another tenant sees a 404."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from llmos.batches import job_id_of
from llmos.jobs import JobState
from llmos.jobs.kinds import register_job_kind
from tests.batches.conftest import SMOL, Daemon
from tests.heldbatch import RELEASE, held_marker
from tests.waiting import wait_for_job, wait_until

pytestmark = pytest.mark.slow
QUESTIONS = ["What is 2 + 2?", "Name a colour.", "Say hello.", "What is the capital of France?"]


def chat_line(custom_id: str, question: str, model: str = SMOL) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "max_tokens": 6, "temperature": 0,
                     "messages": [{"role": "user", "content": question}]}}


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def lines_of(client: openai.OpenAI, file_id: str) -> list[dict]:
    return [json.loads(x) for x in client.files.content(file_id).content.decode().splitlines()]


@pytest.fixture
def held_kind() -> Iterator[None]:
    register_job_kind("batch", "tests.heldbatch:batch_held_after_2", replace=True)
    yield
    register_job_kind("batch", "llmos.batches.job:batch_job", replace=True)


def batch_requests(d: Daemon, admin_key: str) -> float:
    text = httpx.get(d.url + "/metrics", headers={"Authorization": f"Bearer {admin_key}"}).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("llmos_batch_requests_total{") and 'status="200"' in line)


def test_a_batch_runs_its_good_lines_and_puts_bad_ones_in_the_error_file(daemon: Daemon) -> None:
    key, admin = daemon.key(), daemon.key("admin")
    client = daemon.client(key)
    rows = [chat_line(f"q{i}", q) for i, q in enumerate(QUESTIONS)]
    rows.insert(2, {**chat_line("wrong-url", "hi"), "url": "/v1/embeddings"})  # not this batch's endpoint
    rows.append(chat_line("no-such-model", "hi", model="no-such-model"))  # runs, answered 404
    before = batch_requests(daemon, admin)
    f = client.files.create(file=("requests.jsonl", jsonl(rows)), purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"run": "test"})
    assert batch.id.startswith("batch_") and batch.status in ("validating", "in_progress")
    assert batch.input_file_id == f.id and batch.metadata == {"run": "test"}
    job_id = job_id_of(batch.id)
    assert job_id is not None
    info = wait_for_job(daemon.jobs, job_id, JobState.SUCCEEDED)
    assert info.kind == "batch" and info.progress.step == info.progress.total == 6  # progress in `llmos jobs`

    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.completed_at and done.in_progress_at and done.finalizing_at
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (6, 4, 2)
    out = lines_of(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in out) == ["q0", "q1", "q2", "q3"]
    for o in out:
        assert o["id"].startswith("batch_req_") and o["error"] is None
        assert o["response"]["status_code"] == 200 and o["response"]["request_id"]
        body = o["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == SMOL
        assert body["choices"][0]["message"]["content"] and body["usage"]["completion_tokens"] > 0
    errors = {e["custom_id"]: e for e in lines_of(client, done.error_file_id)}
    assert set(errors) == {"wrong-url", "no-such-model"}
    assert errors["wrong-url"]["response"] is None and errors["wrong-url"]["error"]["line"] == 3
    assert "endpoint" in errors["wrong-url"]["error"]["message"]
    assert errors["no-such-model"]["response"]["status_code"] == 404
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"
    assert batch.id in [b.id for b in client.batches.list()]
    assert batch_requests(daemon, admin) - before == 4  # /metrics counts the batch's answered requests

    other = daemon.client(daemon.key())
    for call in (lambda: other.batches.retrieve(batch.id), lambda: other.batches.cancel(batch.id),
                 lambda: other.files.content(done.output_file_id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert list(other.batches.list()) == []
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_a_cancelled_batch_keeps_the_answers_it_finished(daemon: Daemon, held_kind: None) -> None:
    client = daemon.client(daemon.key())
    f = client.files.create(file=("r.jsonl", jsonl([chat_line(f"c{i}", q) for i, q in enumerate(QUESTIONS)])),
                            purpose="batch")
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    job_id = job_id_of(batch.id)
    assert job_id is not None
    marker = held_marker(daemon.rt.settings.jobs_dir, job_id)
    wait_until(marker.exists, "the batch holding after two lines", job=(daemon.jobs, job_id))
    assert client.batches.cancel(batch.id).status == "cancelling"
    wait_for_job(daemon.jobs, job_id, JobState.CANCELLED)
    (marker.parent / RELEASE).touch()
    done = client.batches.retrieve(batch.id)
    assert done.status == "cancelled" and done.cancelled_at and done.cancelling_at
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 0)
    assert [o["custom_id"] for o in lines_of(client, done.output_file_id)] == ["c0", "c1"]
    assert done.error_file_id is None


@pytest.mark.parametrize("change,param", [
    ({"endpoint": "/v1/tag"}, "endpoint"),
    ({"completion_window": "1h"}, "completion_window"),
    ({"input_file_id": "file-000000000000000000000000"}, "input_file_id"),
    ({"output_expires_after": {"anchor": "created_at", "seconds": 3600}}, "output_expires_after"),
])
def test_bad_create_requests_are_refused_naming_the_field(daemon: Daemon, change: dict, param: str) -> None:
    key = daemon.key()
    client = daemon.client(key)
    f = client.files.create(file=("r.jsonl", jsonl([chat_line("a", "hi")])), purpose="batch")
    body = {"input_file_id": f.id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **change}
    r = httpx.post(daemon.url + "/v1/batches", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code in (400, 404), r.text
    assert param in json.dumps(r.json()["error"])
    assert list(client.batches.list()) == []  # nothing queued


def test_a_fine_tune_file_is_not_a_batch_input(daemon: Daemon) -> None:
    client = daemon.client(daemon.key("infer", "train", "read"))
    f = client.files.create(file=("t.jsonl", jsonl([{"text": "a", "label": 1}])), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as err:
        client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert err.value.body["param"] == "input_file_id"  # type: ignore[index]
