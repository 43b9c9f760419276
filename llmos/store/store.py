"""The store facade: blobs + registry + importer over one home folder and database."""

from __future__ import annotations

from llmos.config import Settings
from llmos.db.engine import Database
from llmos.errors import Conflict
from llmos.store.blobs import BlobStore
from llmos.store.importer import Importer
from llmos.store.registry import Registry


class Store:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.blobs = BlobStore(settings.blobs_dir, settings.tmp_dir)
        self.registry = Registry(db, self.blobs, settings.snapshots_dir, settings.locks_dir)
        self.importer = Importer(self.registry, settings.tmp_dir)

    def clean_tmp(self) -> int:
        """Remove leftovers of interrupted imports, unless another process is importing right now."""
        try:
            with self.registry.store_lock(exclusive=True, wait=False):
                return self.blobs.clean_tmp()
        except Conflict:
            return 0
