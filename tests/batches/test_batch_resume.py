"""A daemon killed mid-batch, in the middle of writing a journal line, resumes the batch: the torn line
is cut off, the lines the journal held are not run again, and every request is in the output once."""

from __future__ import annotations

import json
import os
import signal

import pytest

from llmos.batches import job_id_of
from llmos.jobs import JobRunner, JobState
from llmos.jobs.kinds import register_job_kind
from llmos.jobs.procs import process_alive
from llmos.runtime import open_runtime
from tests.batches.conftest import Daemon
from tests.batches.test_openai_batches import QUESTIONS, chat_line, jsonl, lines_of
from tests.heldbatch import held_marker
from tests.train.conftest import crash
from tests.waiting import wait_for_job, wait_until

pytestmark = pytest.mark.slow


def test_a_daemon_killed_mid_batch_resumes_and_runs_no_request_twice(daemon: Daemon) -> None:
    client = daemon.client(daemon.key())
    rows = [chat_line(f"r{i}", q) for i, q in enumerate([*QUESTIONS, "Count to three."])]
    f = client.files.create(file=("r.jsonl", jsonl(rows)), purpose="batch")
    register_job_kind("batch", "tests.heldbatch:batch_torn_at_3", replace=True)
    try:
        batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        job_id = job_id_of(batch.id)
        assert job_id is not None
        marker = held_marker(daemon.rt.settings.jobs_dir, job_id)
        wait_until(marker.exists, "the runner stopped inside its third journal write", job=(daemon.jobs, job_id))
    finally:
        register_job_kind("batch", "llmos.batches.job:batch_job", replace=True)
    crash(daemon.jobs)  # the daemon's job side dies, then its runner, mid-write
    pid = daemon.jobs.get(job_id).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not process_alive(pid, None), "the runner dead")
    journal = marker.parent / "journal.jsonl"
    assert not journal.read_bytes().endswith(b"\n")  # two whole lines and half of the third

    rt = open_runtime(daemon.rt.settings, builtins=False)
    second = JobRunner(rt)  # a restarted daemon requeues the batch; its runner resumes from the journal
    second.startup()
    try:
        info = wait_for_job(second, job_id, JobState.SUCCEEDED)
        assert info.attempts == 2 and "resuming: 2 of 5 lines already done" in second.logs(job_id)
    finally:
        second.shutdown()
        rt.close()
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.completed == 5
    ids = [o["custom_id"] for o in lines_of(client, done.output_file_id)]
    assert sorted(ids) == [f"r{i}" for i in range(5)]  # each once: none lost, none run twice
    assert [json.loads(x)["line"] for x in journal.read_text().splitlines()] == [1, 2, 3, 4, 5]
