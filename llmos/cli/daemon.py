"""`llmos ps`, `llmos load`, `llmos unload`: ask the running daemon about its kernel."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmos.cli.common import console, human_bytes, print_json
from llmos.cli.tables import duration, new_table, size
from llmos.client import Client

Url = Annotated[Optional[str], typer.Option("--url", help="daemon URL (default: from settings)")]


def ps(url: Url = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Loaded models, their memory, and queue depths."""
    data = Client(url).ps()
    if as_json:
        print_json(data)
        return
    # REFS: requests holding the engine; WAIT / RUN: sequences queued / decoding
    # DEVICE only where there is a choice of device: on one host it is always the host (the devices table says so)
    placed = len(data.get("devices") or []) > 1
    table = new_table("MODEL", "ENGINE", *(["DEVICE"] if placed else []), "MEMORY", "REFS", "WAIT", "RUN", "TOK/S",
                      "UNLOAD IN", wrap=["MODEL"])
    routed = []
    for m in data["models"]:
        q = m["queue"] or {}
        engine = m.get("engine", "hf")
        table.add_row(m["model"], engine, *([m.get("device") or "-"] if placed else []),
                      size(m["footprint_bytes"]) if m["loaded"] else "-", str(m["in_use"]),
                      str(q.get("waiting", 0)), str(q.get("running", 0)), f"{q.get('tokens_per_s') or 0:.1f}",
                      duration(m["expires_in_s"]))
        routed += [f"{m['model']} on {engine}: {why}" for why in m.get("routed", [])]
    console.print(table)
    for line in routed:
        console.print(f"routed: {line}")
    console.print(f"memory: {human_bytes(data['used_bytes'])} of {human_bytes(data['budget_bytes'])} budget")
    _devices(data.get("devices") or [], data.get("device_notes") or [])


def _devices(devices: list[dict], notes: list[str]) -> None:
    """The devices table: each device's budget, what is held there and what sits on it."""
    if not devices:
        return
    table = new_table("DEVICE", "NAME", "USED", "BUDGET", "MODELS", "JOBS", "LOADS", "EVICTED", wrap=["MODELS"])
    for d in devices:
        table.add_row(d["id"], d["name"], size(d["used_bytes"]), size(d["budget_bytes"]),
                      ", ".join(d["models"]) or "-", ", ".join(d["reserved"]) or "-", str(d["loads"]),
                      str(d["evictions"]))
    console.print(table)
    for line in notes:
        console.print(f"note: {line}")


def load(model: str, keep_alive: Annotated[Optional[float], typer.Option(help="seconds idle before unload")] = None,
         url: Url = None) -> None:
    """Load MODEL now (instead of on its first request)."""
    state = Client(url).load(model, keep_alive)
    console.print(f"loaded {state['model']} ({human_bytes(state['footprint_bytes'])})")


def unload(model: str, url: Url = None) -> None:
    """Unload MODEL if it is idle."""
    done = Client(url).unload(model)["unloaded"]
    console.print(f"unloaded {model}" if done else f"{model} was not loaded")
