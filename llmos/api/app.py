"""create_app: the daemon's FastAPI application over an opened Runtime and its Kernel."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from llmos import __version__
from llmos.api import admin, datasets, openai, tasks
from llmos.api import jobs as job_routes
from llmos.api.errors import install_error_handlers
from llmos.kernel.core import Kernel
from llmos.kernel.jobs import JobRunner
from llmos.runtime import Runtime


def create_app(runtime: Runtime, kernel: Kernel | None = None, jobs: JobRunner | None = None) -> FastAPI:
    kernel = kernel or Kernel(runtime.settings, runtime.store.registry)
    jobs = jobs or JobRunner(runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        jobs.startup()  # recover jobs the last daemon left, then supervise runners
        yield
        # Running jobs checkpoint and exit (a restart resumes them); this waits up to job_stop_timeout.
        await run_in_threadpool(jobs.shutdown)
        kernel.close()

    app = FastAPI(title="llmos", version=__version__, lifespan=lifespan,
                  description="An operating system for language models: OpenAI-compatible API.")
    app.state.runtime = runtime
    app.state.kernel = kernel
    app.state.jobs = jobs
    app.state.started = time.time()
    install_error_handlers(app)
    for module in (admin, datasets, openai, tasks, job_routes):
        app.include_router(module.router)
    return app
