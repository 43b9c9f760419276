"""create_app: the daemon's FastAPI application over an opened Runtime."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request

from llmos import __version__
from llmos.api.errors import install_error_handlers
from llmos.runtime import Runtime


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="llmos", version=__version__,
                  description="An operating system for language models: OpenAI-compatible API.")
    app.state.runtime = runtime
    app.state.started = time.time()
    install_error_handlers(app)

    @app.get("/health", tags=["admin"])
    def health(request: Request) -> dict[str, object]:
        rt: Runtime = request.app.state.runtime
        return {"status": "ok", "version": __version__, "models": len(rt.store.registry.list()),
                "uptime_s": round(time.time() - request.app.state.started, 1)}

    @app.get("/v1/models", tags=["openai"])
    def list_models(request: Request) -> dict[str, object]:
        rt: Runtime = request.app.state.runtime
        data = [{"id": i.name if i.tag == "latest" else i.ref, "object": "model", "owned_by": "llmos",
                 "created": int(i.created_at.timestamp()), "tasks": i.manifest.tasks}
                for i in rt.store.registry.list()]
        return {"object": "list", "data": data}

    return app
