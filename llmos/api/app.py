"""create_app: the daemon's FastAPI application over an opened Runtime and its Kernel."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from llmos import __version__
from llmos.api import admin, datasets, openai, tasks
from llmos.api import feedback as feedback_routes
from llmos.api import jobs as job_routes
from llmos.api import prompt_tasks as prompt_task_routes
from llmos.api import train as train_routes
from llmos.api import tuning as tuning_routes
from llmos.api.auth import AuthMiddleware
from llmos.api.errors import install_error_handlers
from llmos.api.guard import JsonGuard
from llmos.auth.bootstrap import announce_bootstrap
from llmos.auth.limits import Limiter
from llmos.kernel.core import Kernel
from llmos.kernel.cosched import CoScheduler
from llmos.kernel.jobs import JobRunner
from llmos.loop import Loop
from llmos.obs.canary import register_canary_source
from llmos.obs import routes as obs_routes
from llmos.obs.cosched import CoschedCollector
from llmos.runtime import Runtime
from llmos.web import install_console


def create_app(runtime: Runtime, kernel: Kernel | None = None, jobs: JobRunner | None = None) -> FastAPI:
    kernel = kernel or Kernel(runtime.settings, runtime.store.registry)
    jobs = jobs or JobRunner(runtime)
    cosched = CoScheduler(runtime.settings, kernel, jobs)  # jobs yield to requests; memory admission
    loop = Loop(runtime, jobs)  # feedback -> retrain -> gate -> canary -> promote / roll back
    kernel.router = loop.router.route  # the canary's share of a name's traffic goes to the candidate

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime.settings.auth_enabled:
            await run_in_threadpool(announce_bootstrap, runtime.db)  # the first admin key, printed once
        jobs.startup()  # recover jobs the last daemon left, then supervise runners
        cosched.start()
        obs.start()  # alert evaluation thread
        unregister_canaries = register_canary_source(loop.router.shares)
        loop.start(runtime.settings.loop_interval)
        yield
        await run_in_threadpool(loop.stop)
        unregister_canaries()
        await run_in_threadpool(obs.stop)
        await run_in_threadpool(cosched.stop)
        # Running jobs checkpoint and exit (a restart resumes them); this waits up to job_stop_timeout.
        await run_in_threadpool(jobs.shutdown)
        kernel.close()

    app = FastAPI(title="llmos", version=__version__, lifespan=lifespan,
                  description="An operating system for language models: OpenAI-compatible API.")
    app.state.runtime = runtime
    app.state.kernel = kernel
    app.state.jobs = jobs
    app.state.cosched = cosched
    app.state.loop = loop
    app.state.started = time.time()
    install_error_handlers(app)
    app.state.limiter = Limiter(runtime.db)  # per-key request rates and daily token quotas
    # No route sees a request before its key, scope and limits are checked (middleware added after this
    # one, such as metrics, wraps it and so also counts the denials).
    app.add_middleware(JsonGuard)  # inside auth: bodies of admitted requests only, parsed once and checked
    app.add_middleware(AuthMiddleware, settings=runtime.settings, db=runtime.db, limiter=app.state.limiter)
    obs = obs_routes.install(app, runtime, kernel, jobs)  # metrics middleware + alert rules (checked here)
    obs.metrics.registry.register(CoschedCollector(cosched))
    for module in (admin, datasets, openai, tasks, job_routes, train_routes, tuning_routes, obs_routes,
                   feedback_routes, prompt_task_routes):
        app.include_router(module.router)
    app.include_router(train_routes.openai_path)
    install_console(app)  # the web console at / and /console/
    return app
