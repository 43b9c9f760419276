"""`llmos serve`, `llmos gc`, `llmos doctor`."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import sys
from typing import Annotated, Optional

import typer
from rich.table import Table

from llmos import __version__
from llmos.cli.common import console, human_bytes, runtime
from llmos.cli.tables import new_table
from llmos.errors import ExitCode, LlmosError
from llmos.store.builtin import BUILTINS, locate


def serve(
    host: Annotated[Optional[str], typer.Option(help="address to listen on (default: settings)")] = None,
    port: Annotated[Optional[int], typer.Option(help="port (default: settings)")] = None,
    cluster: Annotated[Optional[str], typer.Option(
        help="run engines and jobs on a Ray cluster: ray://HOST:PORT (its head's GCS port) or auto")] = None,
) -> None:
    """Start the daemon: HTTP API on HOST:PORT with the store's models."""
    import uvicorn

    from llmos.daemon import create_app

    rt = runtime()
    h, p = host or rt.settings.host, port or rt.settings.port
    rt.settings.host, rt.settings.port = h, p  # auth=auto decides by the address actually listened on
    if cluster is not None:
        rt.settings.cluster = cluster
    app = create_app(rt)  # joins the cluster first: an address that does not answer fails here, naming it
    where = f"; cluster {rt.settings.cluster}" if rt.settings.cluster else ""
    console.print(f"llmos {__version__} serving on http://{h}:{p} (home {rt.settings.home}; "
                  f"auth {'on' if rt.settings.auth_enabled else 'off'}{where})")
    uvicorn.run(app, host=h, port=p, log_level="info")


def gc() -> None:
    """Remove blobs and snapshots that no model references."""
    report = runtime(builtins=False).store.registry.gc()
    console.print(f"removed {report.blobs_removed} blob(s), {report.snapshots_removed} snapshot(s); "
                  f"freed {human_bytes(report.bytes_freed)}")


PACKAGES = ("torch", "transformers", "peft", "accelerate", "safetensors", "gguf", "fastapi", "sqlalchemy",
            "alembic", "pydantic")


def doctor() -> None:
    """Check the environment, database and store; exit non-zero if anything is wrong."""
    table = new_table("CHECK", "STATUS", "DETAIL", wrap=["CHECK", "DETAIL"])
    table.add_row("llmos", "ok", f"{__version__} on Python {platform.python_version()} ({sys.platform})")
    for pkg in PACKAGES:
        table.add_row(pkg, *_version(pkg))
    failures = _check_builtins(table)
    try:
        rt = runtime(builtins=False)
    except LlmosError as exc:
        table.add_row("settings/database", "[red]fail[/red]", exc.message)
        console.print(table)
        raise typer.Exit(exc.exit_code) from None
    s = rt.settings
    table.add_row("home", "ok", f"{s.home} ({human_bytes(shutil.disk_usage(s.home).free)} free)")
    table.add_row("database", "ok", f"{rt.db.url.split('://')[0]} schema {rt.db.revision()}, "
                  f"{len(rt.db.tables())} tables")
    table.add_row("memory budget", "ok", human_bytes(s.memory_budget))
    failures += _check_store(rt, table)
    console.print(table)
    if failures:
        raise typer.Exit(ExitCode.INTEGRITY)


def _version(pkg: str) -> tuple[str, str]:
    try:
        return "ok", importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "[red]missing[/red]", "not installed"


def _check_builtins(table: Table) -> int:
    failures = 0
    for model in BUILTINS.values():
        try:
            table.add_row(f"package {model.package}", "ok", str(locate(model)))
        except LlmosError as exc:
            failures += 1
            table.add_row(f"package {model.package}", "[red]missing[/red]", exc.message)
    return failures


def _check_store(rt, table: Table) -> int:  # type: ignore[no-untyped-def]
    models = rt.store.registry.list()
    with console.status("verifying blob hashes"):
        problems = rt.store.registry.check()
    bad = [p for p in problems if p.what != "orphan_blob"]
    orphans = len(problems) - len(bad)
    detail = f"{len(models)} model(s), {len(rt.store.blobs.digests())} blob(s) verified"
    if orphans:
        detail += f"; {orphans} unreferenced blob(s) (run `llmos gc`)"
    table.add_row("store", "ok" if not bad else "[red]fail[/red]", detail)
    for p in bad:
        users = ", ".join(rt.store.registry.users_of(p.detail)) or "no model"
        table.add_row(f"  {p.what}", "[red]fail[/red]", f"{p.detail} (used by {users})")
    return len(bad)
