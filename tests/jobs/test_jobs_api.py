"""Job routes and `llmos jobs ...` against a daemon app (real runner processes, no model needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from llmos.daemon import create_app
from llmos.api.deps import Caller
from llmos.cli import app as cli
from llmos.errors import NotFound
from llmos.kernel.core import Kernel
from llmos.jobs import JobRunner, JobState, register_job_kind
from llmos.runtime import open_runtime
from tests.api.server import serving
from tests.conftest import make_settings
from tests.waiting import BACKSTOP_S, wait_for_job, wait_until

FAST = {"job_progress_interval": 0.0, "job_poll_interval": 0.05, "job_stop_timeout": BACKSTOP_S}
ENDLESS = {"n": 1_000_000, "delay": 0.02}  # runs until the test pauses, cancels or shuts it down


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[FastAPI]:
    """The daemon's app; an ``X-Tenant`` header picks the caller's tenant (standing in for auth)."""
    register_job_kind("count", "tests.jobs.jobkinds:count", replace=True)
    rt = open_runtime(make_settings(tmp_path / "home", **FAST), builtins=False)
    app = create_app(rt, Kernel(rt.settings, rt.store.registry), JobRunner(rt))

    @app.middleware("http")
    async def tenant(request: Request, call_next):  # type: ignore[no-untyped-def]
        request.state.caller = Caller(tenant=request.headers.get("x-tenant", "default"))
        return await call_next(request)

    yield app
    rt.close()


def test_job_routes_are_tenant_scoped_and_control_the_runner(daemon: FastAPI) -> None:
    jobs: JobRunner = daemon.state.jobs
    with TestClient(daemon) as c:
        job_id = jobs.submit("count", ENDLESS)
        assert [j["id"] for j in c.get("/v1/jobs").json()["data"]] == [job_id]
        assert c.get("/v1/jobs", headers={"x-tenant": "other"}).json()["data"] == []
        for path in ("", "/events", "/logs"):
            r = c.get(f"/v1/jobs/{job_id}{path}", headers={"x-tenant": "other"})
            assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
        for action in ("pause", "resume", "cancel"):
            assert c.post(f"/v1/jobs/{job_id}/{action}", headers={"x-tenant": "other"}).status_code == 404
        assert c.get("/v1/jobs?state=bogus").status_code == 400

        wait_for_job(jobs, job_id, JobState.RUNNING)
        assert c.post(f"/v1/jobs/{job_id}/pause").json()["requested"] == "pause"
        assert wait_for_job(jobs, job_id, JobState.PAUSED).pid is not None
        assert c.get("/v1/jobs?state=paused").json()["data"][0]["id"] == job_id
        c.post(f"/v1/jobs/{job_id}/resume")
        wait_for_job(jobs, job_id, JobState.RUNNING)
        events = c.get(f"/v1/jobs/{job_id}/events").json()["data"]
        assert [e["data"]["state"] for e in events if e["kind"] == "state"] == ["queued", "running", "paused",
                                                                                 "running"]
        since = events[-1]["id"]
        assert all(e["id"] > since for e in c.get(f"/v1/jobs/{job_id}/events?since={since}").json()["data"])
        assert f"counting from 0 to {ENDLESS['n']}" in c.get(f"/v1/jobs/{job_id}/logs").json()["log"]

        other = jobs.submit("count", ENDLESS)
        c.post(f"/v1/jobs/{other}/pause", json={"free_memory": True})  # queued: held at once
        assert c.get(f"/v1/jobs/{other}").json()["state"] == "paused"
        assert c.post(f"/v1/jobs/{other}/cancel").json()["state"] == "cancelled"
        assert c.post(f"/v1/jobs/{other}/resume").status_code == 409
    # Leaving the app's lifespan is a daemon shutdown: the running job checkpoints and waits.
    info = jobs.get(job_id)
    assert (info.state, info.reason, info.pid) == (JobState.PAUSED, "shutdown", None)
    assert info.checkpoint is not None


def test_the_jobs_cli_talks_to_the_daemon(daemon: FastAPI) -> None:
    jobs: JobRunner = daemon.state.jobs
    run = CliRunner().invoke
    with serving(daemon) as url:
        done = jobs.submit("count", {"n": 15, "delay": 0.02})
        follow = run(cli, ["jobs", "show", done, "--follow", "--interval", "0.1", "--url", url])
        assert follow.exit_code == 0, follow.output
        assert "succeeded" in follow.output and "'count': 15" in follow.output
        listing = run(cli, ["jobs", "list", "--url", url], env={"COLUMNS": "200"})
        assert done in listing.output and "15/15" in listing.output
        assert "counting from 0 to 15" in run(cli, ["jobs", "logs", done, "--url", url]).output

        slow = jobs.submit("count", ENDLESS)
        wait_for_job(jobs, slow, JobState.RUNNING)
        assert "pause requested" in run(cli, ["jobs", "pause", slow, "--free-memory", "--url", url]).output
        wait_for_job(jobs, slow, JobState.PAUSED)
        wait_until(lambda: jobs.get(slow).pid is None, "the paused runner gone")
        resumed = run(cli, ["jobs", "resume", slow, "--url", url]).output  # its runner had exited: requeued
        assert "queued" in resumed or "running" in resumed
        wait_for_job(jobs, slow, JobState.RUNNING)
        run(cli, ["jobs", "cancel", slow, "--url", url])
        assert wait_for_job(jobs, slow).state == JobState.CANCELLED
        show = run(cli, ["jobs", "show", slow, "--url", url])
        assert "cancelled" in show.output and "attempts  2" in show.output
        failed = run(cli, ["jobs", "show", slow, "--follow", "--url", url])
        assert failed.exit_code == 1
        missing = run(cli, ["jobs", "show", "job-nope", "--url", url])
        assert isinstance(missing.exception, NotFound)
