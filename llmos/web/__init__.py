"""The web console: server-rendered pages at ``/console/`` (and ``/``), their static files and JSON routes.

``install_console(app)`` adds it to the daemon's FastAPI app. The console signs people in with an API
key (``llmos.web.session``), and reads daemon state through the same objects the HTTP API uses.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from llmos.web import api, kb, pages
from llmos.web.render import STATIC_DIR
from llmos.web.session import Sessions


def install_console(app: FastAPI) -> None:
    app.state.console_sessions = Sessions()
    app.include_router(pages.root)
    app.include_router(pages.router)
    app.include_router(kb.router)
    app.include_router(api.router)
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
