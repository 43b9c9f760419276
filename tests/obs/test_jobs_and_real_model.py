"""Metrics and alerts over real runner processes (jobs) and over the real built-in chat model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from llmos.daemon import create_app
from llmos.engines.base import FakeEngine
from llmos.kernel.core import Kernel
from llmos.jobs import JobRunner, JobState, register_job_kind
from llmos.runtime import Runtime, open_runtime
from tests.conftest import make_settings
from tests.obs.conftest import scrape, value, write_rules
from tests.waiting import BACKSTOP_S, wait_for_job, wait_until

FAST = {"job_progress_interval": 0.0, "job_poll_interval": 0.05, "job_stop_timeout": BACKSTOP_S}


@pytest.fixture
def job_app(tmp_path: Path) -> Iterator[TestClient]:
    """A daemon over a fresh home whose jobs run in real runner processes (two at once)."""
    register_job_kind("count", "tests.jobs.jobkinds:count", replace=True)
    rules = write_rules(tmp_path / "alerts.yaml", "rules:\n  - {name: job-failed, kind: job_failed, window: 10m}\n")
    rt = open_runtime(make_settings(tmp_path / "home", max_jobs=2, alerts_file=rules, alert_interval=3600, **FAST),
                      builtins=False)
    kernel = Kernel(rt.settings, rt.store.registry, engine_factory=lambda ref: FakeEngine(ref))
    jobs = JobRunner(rt)
    with TestClient(create_app(rt, kernel, jobs)) as client:
        client.jobs = jobs  # type: ignore[attr-defined]
        yield client
    rt.close()


@pytest.mark.slow
def test_job_states_progress_and_the_job_failed_rule(job_app: TestClient) -> None:
    jobs: JobRunner = job_app.jobs  # type: ignore[attr-defined]
    manager = job_app.app.state.obs.alerts
    long_id = jobs.submit("count", {"n": 400, "delay": 0.02, "hold_after": 3})  # running until cancelled
    failing = jobs.submit("count", {"n": 10, "fail_at": 3, "delay": 0.01})
    assert manager.evaluate() == []
    assert wait_for_job(jobs, failing).state == JobState.FAILED
    wait_until(lambda: jobs.get(long_id).progress.step >= 3, "the long job at step 3", job=(jobs, long_id))
    samples = scrape(job_app)
    assert value(samples, "llmos_jobs", kind="count", state="failed") == 1
    assert value(samples, "llmos_jobs", kind="count", state="running") == 1
    ratio = value(samples, "llmos_job_progress_ratio", job=long_id, kind="count", state="running")
    assert 3 / 400 <= ratio < 1
    assert value(samples, "llmos_job_step", job=long_id, kind="count", state="running") >= 3
    (fired,) = manager.evaluate()
    assert (fired.alert, fired.state, fired.value) == ("job-failed", "firing", 1.0)
    jobs.cancel(long_id)
    assert wait_for_job(jobs, long_id).state == JobState.CANCELLED
    assert value(scrape(job_app), "llmos_jobs", kind="count", state="cancelled") == 1


@pytest.mark.slow
def test_real_model_traffic_moves_the_series(builtin_runtime: Runtime) -> None:
    """SmolLM2 served for real: its measured footprint, real time to first token, tokens counted."""
    kernel = Kernel(builtin_runtime.settings, builtin_runtime.store.registry)
    ref = "smollm2-135m-instruct:latest"
    with TestClient(create_app(builtin_runtime, kernel)) as client:
        before = scrape(client)
        r = client.post("/v1/chat/completions", json={"model": "smollm2-135m-instruct", "max_tokens": 4,
                                                      "messages": [{"role": "user", "content": "Say hi."}]})
        assert r.status_code == 200, r.text
        completion = r.json()["usage"]["completion_tokens"]
        after = scrape(client)
    kernel.close()
    assert 1 <= completion <= 4
    assert value(after, "llmos_generated_tokens_total", model=ref) - value(before, "llmos_generated_tokens_total",
                                                                           model=ref) == completion
    assert value(after, "llmos_time_to_first_token_seconds_count", route="chat", model=ref) == 1
    ttft = value(after, "llmos_time_to_first_token_seconds_sum", route="chat", model=ref)
    latency = value(after, "llmos_request_latency_seconds_sum", route="chat", model=ref)
    assert 0 < ttft <= latency
    assert value(after, "llmos_model_loaded", model=ref, engine="llamacpp") == 1
    footprint = value(after, "llmos_model_memory_bytes", model=ref, engine="llamacpp")
    assert footprint > 100e6  # 135M parameters
    assert value(after, "llmos_memory_used_bytes") >= footprint
