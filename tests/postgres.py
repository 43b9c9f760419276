"""Throwaway PostgreSQL servers for tests: initdb + pg_ctl on a loopback port in a temporary folder.

PostgreSQL refuses to run as root, so under root the server runs as user ``postgres`` (runuser), in a
folder of its own (pytest's temporary folders are private to root)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text


def debian_bindir() -> Path | None:
    """The newest Debian PostgreSQL server's binaries (no pgvector there)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin")) if Path("/usr/lib/postgresql").is_dir() else []
    return found[-1] if found else None


def pgserver_bindir() -> Path | None:
    """The binaries of the ``pgserver`` wheel: a PostgreSQL 16 with the pgvector extension."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def can_run(bindir: Path) -> str | None:
    """Why servers from ``bindir`` cannot run here; None when they can."""
    if not (bindir / "initdb").is_file() or not (bindir / "pg_ctl").is_file():
        return f"no PostgreSQL server binaries in {bindir}"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start PostgreSQL as another user"
    return None


def started(bindir: Path | None, missing: str) -> Iterator[str]:
    """A fixture's body: a server from ``bindir`` (its URL without a database name), or the test skipped
    with ``missing`` (no binaries) or why they cannot run here."""
    import pytest

    why = missing if bindir is None else can_run(bindir)
    if why:
        pytest.skip(why)
    assert bindir is not None
    with server(bindir) as url:
        yield url


@contextmanager
def server(bindir: Path) -> Iterator[str]:
    """A running server; yields its SQLAlchemy URL without a database name."""
    root = Path(tempfile.mkdtemp(prefix="llmos-pg-"))
    root.chmod(0o777)
    data = root / "data"
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    pg_ctl = bindir / "pg_ctl"
    try:
        subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "llmos"], check=True,
                       capture_output=True)
        port = _free_port()
        subprocess.run([*as_pg, str(pg_ctl), "-D", str(data), "-o", f"-p {port} -k {data} -h 127.0.0.1", "-w",
                        "-l", str(root / "log"), "start"], check=True, capture_output=True)
        yield f"postgresql+psycopg://llmos@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_pg, str(pg_ctl), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def new_database(server_url: str) -> str:
    """A fresh, empty database on the server; its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return f"{server_url}/{name}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
