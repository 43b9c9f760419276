"""`llmos ask "..."`: a request in plain language -> the daemon's plan, shown, run when confirmed.

The plan is made and run by the daemon (``POST /v1/ask``, ``POST /v1/ask/{id}/run``) with this key's
scopes; a question or a refusal is printed and nothing runs. ``--yes`` runs the plan without asking.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from llmos.cli.common import console, print_json
from llmos.client import Client
from llmos.errors import ExitCode


def _show_plan(plan: dict[str, Any]) -> None:
    console.print("Plan:", highlight=False)
    for i, step in enumerate(plan["steps"], start=1):
        call = step["call"]
        console.print(f"  {i}. {step['summary']}  [dim]{call['method']} {call['path']}[/dim]", highlight=False)


def _show_results(answer: dict[str, Any]) -> None:
    for r in answer["results"]:
        mark = "[green]done[/green]" if r["ok"] else f"[red]failed ({r['status']})[/red]"
        console.print(f"  {r['step'] + 1}. {answer['steps'][r['step']]['summary']}: {mark}", highlight=False)
    console.print(answer["message"], highlight=False)


def ask(text: Annotated[str, typer.Argument(help="what to do, in plain language")],
        yes: Annotated[bool, typer.Option("--yes", "-y", help="run the plan without asking")] = False,
        json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Ask the OS to do something in plain language: shows the plan, runs it once confirmed."""
    client = Client()
    try:
        _ask(client, text, yes, json_out)
    finally:
        client.close()


def _ask(client: Client, text: str, yes: bool, json_out: bool) -> None:
    answer = client.ask(text, confirm=yes)
    if answer["status"] == "planned":
        if not json_out:
            _show_plan(answer)
        if not typer.confirm("Run it?", default=False):
            console.print("Nothing was run.")
            raise typer.Exit(0)
        answer = client.run_plan(answer["id"])
    if json_out:
        return print_json(answer)
    if answer["status"] in ("question", "refused"):
        console.print(answer["message"], highlight=False)
        raise typer.Exit(ExitCode.USAGE)
    if yes:
        _show_plan(answer)
    _show_results(answer)
    if answer["status"] == "failed":
        raise typer.Exit(ExitCode.FAILURE)
