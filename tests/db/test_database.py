import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import select, text

from llmos.db.engine import open_database
from llmos.db.tables import AuditEvent
from llmos.errors import ConfigError

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server (the Debian package on this machine kind), run as user postgres."""
    bindir = Path("/usr/lib/postgresql")
    initdb = next(iter(sorted(bindir.glob("*/bin/initdb"))), None) if bindir.is_dir() else None
    if initdb is None or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL server binaries not installed")
    # pytest's temp folders are private to root; the server runs as postgres and needs its own.
    root = Path(tempfile.mkdtemp(prefix="llmos-pg-"))
    root.chmod(0o777)
    data = root / "data"
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_pg, str(initdb), "-D", str(data), "-A", "trust", "-U", "llmos"], check=True,
                   capture_output=True)
    port = _free_port()
    pg_ctl = initdb.parent / "pg_ctl"
    subprocess.run([*as_pg, str(pg_ctl), "-D", str(data), "-o", f"-p {port} -k {data} -h 127.0.0.1", "-w",
                    "-l", str(data / "log"), "start"], check=True, capture_output=True)
    yield f"postgresql+psycopg://llmos@127.0.0.1:{port}/postgres"
    subprocess.run([*as_pg, str(pg_ctl), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


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
