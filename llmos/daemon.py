"""The composition root: the daemon's services and its HTTP application, built once.

``build_daemon(runtime)`` wires the kernel (inference), the job runner (background work), the
co-scheduler (jobs yield to requests; memory admission) and the feedback loop (retrain -> gate ->
canary -> promote / roll back); ``create_app`` mounts the API routers, the console and monitoring
over a Daemon and starts and stops it with the server. Nothing below this module knows how the pieces
are put together: ``llmos.api`` holds only routers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
import logging
import threading
import time
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from llmos import __version__
from llmos.api import admin, batches, datasets, evaluations, files, fine_tuning, kb, openai, rerank, task_routes
from llmos.api import feedback as feedback_routes
from llmos.api import jobs as job_routes
from llmos.api import keys as key_routes
from llmos.api import prompt_tasks as prompt_task_routes
from llmos.api import train as train_routes
from llmos.api import tuning as tuning_routes
from llmos.api.access import AuthMiddleware
from llmos.api.errors import install_error_handlers
from llmos.api.guard import JsonGuard
from llmos.ask import routes as ask_routes
from llmos.auth.bootstrap import announce_bootstrap
from llmos.auth.limits import Limiter
from llmos.cluster import ClusterLoader, RayCluster, RaySpawn, connect
from llmos.feedback import Loop
from llmos.feedback.canary_signals import register_canary_source
from llmos.jobs import JobRunner
from llmos.jobs.cosched import CoScheduler
from llmos.kernel.core import Kernel
from llmos.kernel.devices import budgets
from llmos.obs import routes as obs_routes
from llmos.obs.cosched import CoschedCollector
from llmos.runtime import Runtime
from llmos.web import install_console

import llmos.batches  # noqa: F401,E402  - registers the batch job kind
import llmos.train  # noqa: F401,E402  - registers the train and tune job kinds the runner launches

log = logging.getLogger(__name__)
NODE_WATCH_S = 5.0  # how often the daemon looks for cluster nodes that joined


@dataclass
class Daemon:
    runtime: Runtime
    kernel: Kernel
    jobs: JobRunner
    cosched: CoScheduler
    loop: Loop
    cluster: RayCluster | None = None

    def start(self) -> None:
        """Recover the jobs the last daemon left, then supervise; co-scheduling; the loop thread."""
        if self.cluster is not None:
            self._nodes_stop = threading.Event()
            threading.Thread(target=self._watch_nodes, name="cluster-nodes", daemon=True).start()
        self.jobs.startup()
        self.cosched.start()
        self._unregister_canaries = register_canary_source(self.loop.router.shares)
        self.loop.start(self.runtime.settings.loop_interval)

    def stop(self) -> None:
        """Stop the loop and co-scheduling; running jobs checkpoint and exit (a restart resumes them)."""
        self.loop.stop()
        getattr(self, "_unregister_canaries", lambda: None)()
        self.cosched.stop()
        self.jobs.shutdown()  # waits up to job_stop_timeout

    def close(self) -> None:
        self.kernel.close()
        if self.cluster is not None:
            self._nodes_stop.set()
            self.cluster.close()

    def _watch_nodes(self) -> None:
        """Nodes that join the cluster (or come back, under a new id) become devices models can go to."""
        assert self.cluster is not None
        pool, settings = self.kernel.resources, self.runtime.settings
        while not self._nodes_stop.wait(NODE_WATCH_S):
            try:
                self.cluster.refresh()
                known = {d.id for d in pool.devices}
                for device in self.cluster.devices():
                    if device.id not in known:
                        budget = budgets([device], settings.memory_budget, settings.gpu_budget).get(device.id, 0)
                        pool.add_device(device, budget, self.kernel.placed_factory)
            except Exception:  # noqa: BLE001 - a failed look at the cluster is retried at the next one
                log.exception("reading the cluster's nodes failed")


def build_daemon(runtime: Runtime, kernel: Kernel | None = None, jobs: JobRunner | None = None) -> Daemon:
    cluster = None
    if runtime.settings.cluster and kernel is None:
        cluster, kernel = _cluster_kernel(runtime)
        jobs = jobs or JobRunner(runtime, spawn=RaySpawn(node_of=cluster.node))
    kernel = kernel or Kernel(runtime.settings, runtime.store.registry)
    jobs = jobs or JobRunner(runtime)
    cosched = CoScheduler(runtime.settings, kernel, jobs)
    loop = Loop(runtime, jobs)
    kernel.router = loop.router.route  # the canary's share of a name's traffic goes to the candidate
    return Daemon(runtime, kernel, jobs, cosched, loop, cluster)


def _cluster_kernel(runtime: Runtime) -> tuple[RayCluster, Kernel]:
    """Join the cluster (ConfigError naming the address when it does not answer) and build a kernel
    whose devices are its nodes and whose engines are actors there."""
    settings = runtime.settings
    cluster = connect(settings.cluster, timeout_s=settings.cluster_timeout)
    # Runner processes live on other machines: pause them at step boundaries (through the database),
    # never by signalling a local pid.
    settings.cosched_freeze = False
    loader = ClusterLoader(settings, runtime.store.registry, node_of=cluster.node, on_lost=cluster.mark_dead)
    kernel = Kernel(settings, runtime.store.registry, placed_factory=loader, device_probe=cluster.devices,
                    device_alive=cluster.alive)
    loader.estimate = kernel.estimate
    return cluster, kernel


ROUTERS = (admin, datasets, openai, task_routes, job_routes, train_routes, tuning_routes, evaluations, obs_routes,
           feedback_routes, prompt_task_routes, files, fine_tuning, batches, rerank, kb, ask_routes,
           key_routes)


def create_app(runtime: Runtime, kernel: Kernel | None = None, jobs: JobRunner | None = None) -> FastAPI:
    daemon = build_daemon(runtime, kernel, jobs)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime.settings.auth_enabled:
            await run_in_threadpool(announce_bootstrap, runtime.db)  # the first admin key, printed once
        daemon.start()
        obs.start()  # alert evaluation thread
        yield
        await run_in_threadpool(obs.stop)
        await run_in_threadpool(daemon.stop)
        daemon.close()

    app = FastAPI(title="llmos", version=__version__, lifespan=lifespan,
                  description="An operating system for language models: OpenAI-compatible API.")
    _expose(app, daemon)
    install_error_handlers(app)
    app.state.limiter = Limiter(runtime.db)  # per-key request rates and daily token quotas
    # No route sees a request before its key, scope and limits are checked (middleware added after this
    # one, such as metrics, wraps it and so also counts the denials).
    app.add_middleware(JsonGuard)  # inside auth: bodies of admitted requests only, parsed once and checked
    app.add_middleware(AuthMiddleware, settings=runtime.settings, db=runtime.db, limiter=app.state.limiter)
    obs = obs_routes.install(app, runtime, daemon.kernel, daemon.jobs)  # metrics middleware + alert rules
    obs.metrics.registry.register(CoschedCollector(daemon.cosched))
    for module in ROUTERS:
        app.include_router(module.router)
    install_console(app)  # the web console at / and /console/
    return app


def _expose(app: FastAPI, daemon: Daemon) -> None:
    """The services routes reach through ``request.app.state`` (see ``llmos.api.deps``)."""
    app.state.daemon = daemon
    app.state.runtime = daemon.runtime
    app.state.kernel = daemon.kernel
    app.state.jobs = daemon.jobs
    app.state.cosched = daemon.cosched
    app.state.loop = daemon.loop
    app.state.started = time.time()
