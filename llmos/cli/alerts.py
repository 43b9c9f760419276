"""`llmos alerts list`: the daemon's alert rules, what fires now, and recent notifications."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from llmos.cli.common import console, print_json
from llmos.cli.tables import ago, new_table
from llmos.client import Client

app = typer.Typer(help="Alerts evaluated by the daemon (rules: docs/observability.md).", no_args_is_help=True)

Url = Annotated[Optional[str], typer.Option("--url", help="daemon URL (default: from settings)")]
STYLE = {"firing": "bold red", "pending": "yellow", "ok": "green", "resolved": "green"}


@app.command("list")
def list_alerts(limit: Annotated[int, typer.Option(help="recent notifications to show")] = 20,
                url: Url = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every rule with its state and current value, then the newest firing / resolved notifications
    (`--json` adds each rule's kind and window, and exact times)."""
    data = Client(url).alerts(limit)
    if as_json:
        print_json(data)
        return
    rules = new_table("RULE", "SEV", "STATE", "VALUE", "LIMIT", "DETAIL", wrap=["DETAIL"],
                      title=f"rules: {data['source']}")
    for r in data["rules"]:
        rules.add_row(r["name"], r["severity"], _state(r["state"]), _num(r["value"]), _num(r["threshold"]),
                      r["detail"] or "-")
    console.print(rules)
    if not data["history"]:
        console.print("no alert has fired yet")
        return
    history = new_table("AT", "ALERT", "STATE", "SEV", "DETAIL", "WEBHOOK", wrap=["DETAIL", "WEBHOOK"],
                        title="recent notifications")
    for n in data["history"]:
        history.add_row(ago(n["at"]), n["alert"], _state(n["state"]), n["severity"], n["detail"], n["webhook"] or "-")
    console.print(history)


def _state(s: str) -> str:
    return f"[{STYLE.get(s, 'white')}]{s}[/]"


def _num(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)
