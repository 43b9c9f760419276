"""A daemon for batch tests: a fresh home (SmolLM2 and MiniLM-L6 linked from the session store), auth
on, real engines and job runners, served on the loopback port its settings name (a batch's runner
sends its requests there)."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest
from openai import OpenAI

from llmos.auth import create_key
from llmos.daemon import create_app
from llmos.jobs import JobRunner
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime, open_runtime
from tests.api.server import free_port, serving
from tests.conftest import ModuleDirs, copy_builtin, make_settings

SMOL, MINILM = "smollm2-135m-instruct", "minilm-l6"
FAST = {"auth": "on", "job_progress_interval": 0.0, "job_poll_interval": 0.05, "keep_alive": 600}


@dataclass
class Daemon:
    url: str
    rt: Runtime
    kernel: Kernel
    jobs: JobRunner

    def key(self, *scopes: str, tenant: str | None = None) -> str:
        """A raw API key of ``tenant`` (default: a fresh one) with ``scopes`` (default: infer, read)."""
        _, raw = create_key(self.rt.db, tenant=tenant or f"t-{uuid.uuid4().hex[:8]}", name="batch test",
                            scopes=list(scopes or ("infer", "read")))
        return raw

    def client(self, key: str) -> OpenAI:
        return OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def daemon(builtin_runtime: Runtime, module_dirs: ModuleDirs) -> Iterator[Daemon]:
    port = free_port()
    rt = open_runtime(make_settings(module_dirs("batches") / "home", port=port, **FAST), builtins=False)
    for name in (SMOL, MINILM):
        copy_builtin(rt, builtin_runtime, name)
    kernel = Kernel(rt.settings, rt.store.registry)
    jobs = JobRunner(rt)
    try:
        with serving(create_app(rt, kernel, jobs), port) as url:
            yield Daemon(url, rt, kernel, jobs)
    finally:
        for info in jobs.list():  # runners a test left (a crashed runner's successor) die with the module
            if info.pid and psutil.pid_exists(info.pid):
                os.kill(info.pid, signal.SIGKILL)
        rt.close()
