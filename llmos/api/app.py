"""create_app: the daemon's FastAPI application over an opened Runtime and its Kernel."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from llmos import __version__
from llmos.api import admin, openai, tasks
from llmos.api.errors import install_error_handlers
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime


def create_app(runtime: Runtime, kernel: Kernel | None = None) -> FastAPI:
    kernel = kernel or Kernel(runtime.settings, runtime.store.registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        kernel.close()

    app = FastAPI(title="llmos", version=__version__, lifespan=lifespan,
                  description="An operating system for language models: OpenAI-compatible API.")
    app.state.runtime = runtime
    app.state.kernel = kernel
    app.state.started = time.time()
    install_error_handlers(app)
    for module in (admin, openai, tasks):
        app.include_router(module.router)
    return app
