from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from llmos.db.engine import open_database
from llmos.db.tables import AuditEvent
from llmos.errors import ConfigError
from tests import postgres

EXPECTED = {"manifests", "models", "datasets", "jobs", "job_events", "request_log", "feedback", "api_keys",
            "audit_events"}


def test_sqlite_is_migrated_and_in_wal_mode(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'x' / 'llmos.db'}")
    assert EXPECTED <= set(db.tables())
    assert db.revision() is not None
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    db.close()


def test_reopen_keeps_data_and_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'llmos.db'}"
    db = open_database(url)
    with db.session() as s:
        s.add(AuditEvent(actor="test", action="x"))
    db.close()
    db = open_database(url)
    with db.session() as s:
        assert [e.action for e in s.scalars(select(AuditEvent))] == ["x"]
    db.close()


def test_failed_transaction_writes_nothing(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'llmos.db'}")
    with pytest.raises(RuntimeError):
        with db.session() as s:
            s.add(AuditEvent(actor="test", action="half"))
            s.flush()
            raise RuntimeError("crash midway")
    with db.session() as s:
        assert s.scalars(select(AuditEvent)).all() == []


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="cannot open database"):
        open_database("sqlite:////proc/no/such/dir/llmos.db")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server (the Debian package on this machine kind)."""
    for url in postgres.started(postgres.debian_bindir(), "PostgreSQL server binaries not installed"):
        yield f"{url}/postgres"


def test_postgresql_works_too(postgres_url: str) -> None:
    db = open_database(postgres_url)
    assert EXPECTED <= set(db.tables())
    with db.session() as s:
        s.add(AuditEvent(actor="pg", action="check", detail={"ok": True}))
    with db.session() as s:
        assert s.scalars(select(AuditEvent.detail)).one() == {"ok": True}
    db.close()
    assert open_database(postgres_url).revision() == db.revision()


def test_migrations_match_the_table_definitions(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from llmos.db.tables import Base

    db = open_database(f"sqlite:///{tmp_path / 'llmos.db'}")
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    db.close()
