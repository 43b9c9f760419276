"""Open everything a process needs: settings -> database (migrated) -> store (cleaned, built-ins in)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from llmos.config import Settings, load_settings
from llmos.db.engine import Database, open_database
from llmos.store.builtin import ensure_builtins
from llmos.store.progress import Progress
from llmos.store.store import Store

log = logging.getLogger("llmos")


@dataclass
class Runtime:
    settings: Settings
    db: Database
    store: Store

    def close(self) -> None:
        self.db.close()


def open_runtime(settings: Settings | None = None, *, builtins: bool | None = None,
                 progress_for: Callable[[str], Progress] | None = None) -> Runtime:
    settings = settings or load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    db = open_database(settings.database_url)
    store = Store(settings, db)
    cleaned = store.clean_tmp()
    if cleaned:
        log.warning("removed %d leftover temp file(s) of an interrupted import", cleaned)
    if settings.builtins if builtins is None else builtins:
        for info in ensure_builtins(store.registry, store.importer, progress_for):
            log.info("registered built-in model %s", info.ref)
    return Runtime(settings, db, store)
