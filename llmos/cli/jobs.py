"""`llmos jobs list|show|logs|pause|resume|cancel`: background jobs, through the running daemon."""

from __future__ import annotations

import time
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from llmos.cli.common import console, err, print_json
from llmos.cli.tables import duration, new_table
from llmos.client import Client
from llmos.errors import ExitCode

app = typer.Typer(help="Background jobs (fine-tuning, evaluation, tuning).", no_args_is_help=True)

Url = Annotated[Optional[str], typer.Option("--url", help="daemon URL (default: from settings)")]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]
FINAL = ("succeeded", "failed", "cancelled")
STYLE = {"queued": "cyan", "running": "green", "paused": "yellow", "succeeded": "bold green",
         "failed": "bold red", "cancelled": "magenta"}


@app.command("list")
def list_jobs(state: Annotated[Optional[str], typer.Option(help="only jobs in this state")] = None,
              url: Url = None, as_json: Json = False) -> None:
    """List your jobs, newest first (`jobs show` says when each was created)."""
    jobs = Client(url).jobs(state)
    if as_json:
        print_json(jobs)
        return
    table = new_table("ID", "KIND", "STATE", "PROGRESS", "ETA", "METRICS", wrap=["METRICS"])
    for j in jobs:
        p = j["progress"]
        table.add_row(j["id"], j["kind"], _state(j), _steps(p), duration(p.get("eta_s")), _metrics(p))
    console.print(table)


@app.command()
def show(job_id: str, follow: Annotated[bool, typer.Option("--follow", "-f", help="live progress until the job "
                                                           "ends; exit code 1 unless it succeeds")] = False,
         interval: Annotated[float, typer.Option(help="seconds between updates with --follow")] = 0.5,
         url: Url = None, as_json: Json = False) -> None:
    """Show a job: state, progress, checkpoint, result or error."""
    client = Client(url)
    if follow:
        job = _follow(client, job_id, interval)
        _print_job(job)
        raise typer.Exit(ExitCode.OK if job["state"] == "succeeded" else ExitCode.FAILURE)
    job = client.job(job_id)
    if as_json:
        print_json(job)
        return
    _print_job(job)
    _print_history(client.job_events(job_id, limit=10_000, kinds=list(HISTORY_KINDS)))


@app.command()
def logs(job_id: str, max_bytes: Annotated[int, typer.Option(help="show at most the last N bytes")] = 1 << 20,
         url: Url = None) -> None:
    """Print the job's log: its runner processes' output, every attempt."""
    console.out(Client(url).job_logs(job_id, max_bytes), end="", highlight=False)


@app.command()
def pause(job_id: str, free_memory: Annotated[bool, typer.Option(
              "--free-memory", help="checkpoint and end the runner process (frees memory and the job slot)")] = False,
          url: Url = None) -> None:
    """Pause a job at its next pause point (a queued job is held at once)."""
    job = Client(url).pause_job(job_id, free_memory=free_memory)
    console.print(f"{job_id}: {_state(job)}" + (" (pause requested)" if job["requested"] else ""))


@app.command()
def resume(job_id: str, url: Url = None) -> None:
    """Resume a paused job (in place, or from its checkpoint when its runner had exited)."""
    job = Client(url).resume_job(job_id)
    console.print(f"{job_id}: {_state(job)}")


@app.command()
def cancel(job_id: str, url: Url = None) -> None:
    """Cancel a job (a running one stops at its next pause point)."""
    job = Client(url).cancel_job(job_id)
    console.print(f"{job_id}: {_state(job)}" + (" (cancel requested)" if job["requested"] else ""))


def _follow(client: Client, job_id: str, interval: float) -> dict[str, Any]:
    """A live bar (step/total, metrics, ETA, state) until the job reaches a final state."""
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[state]}"),
                   BarColumn(), TextColumn("{task.fields[steps]}"), TextColumn("{task.fields[metrics]}"),
                   TextColumn("ETA {task.fields[eta]}"), TimeElapsedColumn(), console=err)
    with bar:
        task = bar.add_task(job_id, total=None, state="", steps="", metrics="", eta="-")
        while True:
            job = client.job(job_id)
            p = job["progress"]
            bar.update(task, completed=p.get("step", 0), total=p.get("total"), state=_state(job),
                       steps=_steps(p), metrics=_metrics(p), eta=duration(p.get("eta_s")))
            if job["state"] in FINAL:
                return job
            time.sleep(interval)


def _print_job(job: dict[str, Any]) -> None:
    p = job["progress"]
    rows = [("id", job["id"]), ("kind", job["kind"]), ("state", _state(job)),
            ("progress", f"{_steps(p)}  {_metrics(p)}  ETA {duration(p.get('eta_s'))}"),
            ("requested", job["requested"] or "-"), ("reason", job["reason"] or "-"),
            ("attempts", str(job["attempts"])), ("pid", str(job["pid"] or "-")),
            ("checkpoint", job["checkpoint"] or "-"), ("created", job["created_at"]),
            ("started", job["started_at"] or "-"), ("finished", job["finished_at"] or "-")]
    if job["result"] is not None:
        rows.append(("result", str(job["result"])))
    for key, value in rows:
        console.print(f"[bold]{key:>10}[/bold]  {value}", highlight=False)
    if job["error"]:
        console.print(f"[bold]{'error':>10}[/bold]", highlight=False)
        console.out(job["error"], highlight=False)


HISTORY_KINDS = ("state", "control", "waiting")
HISTORY_SHOWN = 20


def _print_history(events: list[dict[str, Any]]) -> None:
    """State changes, pause / resume requests (who asked and why) and memory waits, newest last."""
    pauses = sum(1 for e in events if e["kind"] == "state" and e["data"].get("state") == "paused")
    console.print(f"[bold]{'history':>10}[/bold]  {len(events)} event(s), paused {pauses} time(s)"
                  + (f"; the last {HISTORY_SHOWN}:" if len(events) > HISTORY_SHOWN else ":"), highlight=False)
    for e in events[-HISTORY_SHOWN:]:
        d = e["data"]
        what = d.get("state") or (f"asked: {d.get('requested')}" if e["kind"] == "control" else e["kind"])
        extra = ", ".join(f"{k} {v}" for k, v in d.items() if k in ("reason", "step", "exited", "resumed", "frozen", "error"))
        console.print(f"{'':>12}{(e['at'] or '')[11:23]}  {what}" + (f" ({extra})" if extra else ""), highlight=False)


def _state(job: dict[str, Any]) -> str:
    return f"[{STYLE.get(job['state'], '')}]{job['state']}[/]"


def _steps(p: dict[str, Any]) -> str:
    total = p.get("total")
    return f"{p.get('step', 0)}/{total}" if total else str(p.get("step", 0))


def _metrics(p: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in (p.get("metrics") or {}).items())
