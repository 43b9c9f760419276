"""`llmos keys create|list|revoke`: API keys, on the local database (no daemon and no key needed).

Whoever can run this can read the database anyway, so local access is the root of trust; every change
is written to the audit log with the operating-system user as the actor.
"""

from __future__ import annotations

import getpass
from typing import Annotated, Optional

import typer

from llmos.auth import SCOPES, audit, create_key, list_keys, revoke
from llmos.cli.common import console, err, print_json, runtime
from llmos.cli.tables import ago, count, new_table

app = typer.Typer(help="API keys: scopes, tenants, rate limits and quotas.", no_args_is_help=True)
Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name (containers): still audited
        return "cli"


@app.command("create")
def create(
    tenant: Annotated[str, typer.Option(help="the tenant the key acts for")] = "default",
    name: Annotated[str, typer.Option(help="a label for people")] = "key",
    scope: Annotated[list[str], typer.Option("--scope", help=f"repeatable: {', '.join(SCOPES)}")] = [],  # noqa: B006
    rate_limit: Annotated[Optional[float], typer.Option(help="requests per second (burst: the same)")] = None,
    quota: Annotated[Optional[int], typer.Option(help="tokens per UTC day (prompt + completion)")] = None,
    as_json: Json = False,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    rt = runtime(builtins=False)
    info, raw = create_key(rt.db, tenant=tenant, name=name, scopes=scope, rate_limit=rate_limit, token_quota=quota)
    audit(rt.db, _actor(), tenant, "key_create", info.id, scopes=info.scopes, name=info.name,
          rate_limit=info.rate_limit, token_quota=info.token_quota)
    if as_json:
        print_json({"id": info.id, "key": raw, "tenant": info.tenant, "scopes": info.scopes})
        return
    console.print(f"created {info.id} (tenant {info.tenant}, scopes {', '.join(info.scopes)})", highlight=False)
    console.print(raw, highlight=False, soft_wrap=True)
    err.print("This key is shown only once; store it now (e.g. in LLMOS_API_KEY).")


@app.command("list")
def list_(tenant: Annotated[Optional[str], typer.Option(help="only this tenant's keys")] = None,
          as_json: Json = False) -> None:
    """List keys (never their secrets)."""
    keys = list_keys(runtime(builtins=False).db, tenant)
    if as_json:
        print_json([{"id": k.id, "tenant": k.tenant, "name": k.name, "scopes": k.scopes,
                     "rate_limit": k.rate_limit, "token_quota": k.token_quota, "created_at": k.created_at,
                     "revoked_at": k.revoked_at} for k in keys])
        return
    table = new_table("ID", "TENANT", "NAME", "SCOPES", "LIMITS", "CREATED", "STATE",
                      wrap=["NAME", "SCOPES", "LIMITS"])
    for k in keys:
        table.add_row(k.id, k.tenant, k.name, ", ".join(k.scopes), _limits(k.rate_limit, k.token_quota),
                      ago(k.created_at), "revoked" if k.revoked else "active")
    console.print(table)


@app.command("revoke")
def revoke_(key_id: Annotated[str, typer.Argument(help="the key's id (key_...)")]) -> None:
    """Revoke a key: the daemon refuses it from the next request on."""
    rt = runtime(builtins=False)
    info = revoke(rt.db, key_id)
    audit(rt.db, _actor(), info.tenant, "key_revoke", info.id)
    console.print(f"revoked {info.id} (tenant {info.tenant})", highlight=False)


def _limits(rate: float | None, quota: int | None) -> str:
    """``5/s``, ``100k tok/day``, both, or ``-``."""
    parts = ([f"{rate:g}/s"] if rate is not None else []) + ([f"{count(quota)} tok/day"] if quota is not None else [])
    return ", ".join(parts) or "-"
