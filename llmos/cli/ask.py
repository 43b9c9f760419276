"""`llmos ask "..."`: a request in plain language -> the daemon's plan, shown, run when confirmed.

The plan is made and run by the daemon (``POST /v1/ask``, ``POST /v1/ask/{id}/run``) with this key's
scopes; a question or a refusal is printed and nothing runs. ``--yes`` runs the plan without asking.

Paths written in the request that exist here are sent as ``local_files``; a plan that uploads one of
them (a dataset import, a document for a knowledge base) is run by this command, step by step, each
step the same call of the same route with this key (the file sent as multipart from this machine).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from llmos.ask.paths import path_tokens
from llmos.cli.common import console, print_json
from llmos.client import Client
from llmos.errors import ExitCode


def _show_plan(plan: dict[str, Any]) -> None:
    console.print("Plan:", highlight=False)
    for i, step in enumerate(plan["steps"], start=1):
        call = step["call"]
        sends = f" <- {call['upload']['path']}" if (call.get("upload") or {}).get("path") else ""
        console.print(f"  {i}. {step['summary']}  [dim]{call['method']} {call['path']}{sends}[/dim]",
                      highlight=False)


def _show_results(answer: dict[str, Any]) -> None:
    for r in answer["results"]:
        mark = "[green]done[/green]" if r["ok"] else f"[red]failed ({r['status']})[/red]"
        console.print(f"  {r['step'] + 1}. {answer['steps'][r['step']]['summary']}: {mark}", highlight=False)
    console.print(answer["message"], highlight=False)


def local_files(text: str) -> list[str]:
    """The path-like words of ``text`` that name a file here (relative ones from the current folder)."""
    return [t for t in path_tokens(text) if Path(t).expanduser().is_file()]


def ask(text: Annotated[str, typer.Argument(help="what to do, in plain language")],
        yes: Annotated[bool, typer.Option("--yes", "-y", help="run the plan without asking")] = False,
        json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Ask the OS to do something in plain language: shows the plan, runs it once confirmed."""
    client = Client()
    try:
        _ask(client, text, yes, json_out)
    finally:
        client.close()


def _uploads_here(plan: dict[str, Any]) -> bool:
    return any((s["call"].get("upload") or {}).get("path") for s in plan["steps"])


def _ask(client: Client, text: str, yes: bool, json_out: bool) -> None:
    here = local_files(text)
    answer = client.ask(text, confirm=yes and not here, local_files=here)
    if answer["status"] == "planned":
        if not json_out and not yes:
            _show_plan(answer)
        if not yes and not typer.confirm("Run it?", default=False):
            console.print("Nothing was run.")
            raise typer.Exit(0)
        answer = run_here(client, answer) if _uploads_here(answer) else client.run_plan(answer["id"])
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


def run_here(client: Client, plan: dict[str, Any]) -> dict[str, Any]:
    """Run a plan that sends files from this machine: its steps in order until one fails."""
    results: list[dict[str, Any]] = []
    for i, step in enumerate(plan["steps"]):
        status, body = _send(client, step["call"])
        results.append({"step": i, "operation": step["operation"], "status": status, "ok": status < 400,
                        "result": body})
        if status >= 400:
            break
    failed = any(not r["ok"] for r in results)
    done = [f"{plan['steps'][r['step']]['summary']}: {'done' if r['ok'] else 'failed'}" for r in results]
    skipped = len(plan["steps"]) - len(results)
    message = "; ".join(done) + (f"; {skipped} later step(s) not run" if skipped else "")
    return {**plan, "status": "failed" if failed else "done", "results": results, "message": message}


def _send(client: Client, call: dict[str, Any]) -> tuple[int, Any]:
    upload = call.get("upload")
    if not upload:
        return client.call(call["method"], call["path"], json=call.get("body"))
    if upload.get("file_id"):  # a file uploaded before: read back through its route, sent on
        status, content = client.call("GET", f"/v1/files/{upload['file_id']}/content")
        if status >= 400:
            return status, content
        data = content if isinstance(content, str) else json.dumps(content)
        files = [(upload["field"], (upload["file_id"] + ".jsonl", data.encode(), "application/octet-stream"))]
        return client.call(call["method"], call["path"], data=call.get("form") or {}, files=files)
    path = Path(upload["path"]).expanduser()
    with path.open("rb") as fh:
        files = [(upload["field"], (path.name, fh, "application/octet-stream"))]
        return client.call(call["method"], call["path"], data=call.get("form") or {}, files=files)
