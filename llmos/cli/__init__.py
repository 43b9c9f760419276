"""The llmos command line. Every failure exits with a documented code (llmos.errors.ExitCode)."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from llmos.cli import ask as ask_cli
from llmos.cli import daemon, models, run, system
from llmos.cli import data
from llmos.cli import jobs
from llmos.cli import kb as kb_cli
from llmos.cli import feedback as feedback_cli
from llmos.cli import keys as keys_cli
from llmos.cli import alerts as alerts_cli
from llmos.cli import train as train_cli
from llmos.cli import prompt_tasks as tasks_cli
from llmos.cli import tune as tune_cli
from llmos.cli.common import err
from llmos.errors import LlmosError

app = typer.Typer(help="llmos: an operating system for language models.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
app.add_typer(models.app, name="models")
app.add_typer(data.app, name="data")
app.add_typer(jobs.app, name="jobs")
app.add_typer(kb_cli.app, name="kb")
app.add_typer(tasks_cli.app, name="tasks")
app.add_typer(feedback_cli.feedback_app, name="feedback")
app.add_typer(feedback_cli.loop_app, name="loop")
app.add_typer(keys_cli.app, name="keys")
app.add_typer(alerts_cli.app, name="alerts")
app.command()(system.serve)
app.command()(system.gc)
app.command()(system.doctor)
app.command()(run.run)
app.command()(run.chat)
app.command()(daemon.ps)
app.command()(daemon.load)
app.command()(daemon.unload)
app.command("train")(train_cli.train)
app.command("eval")(train_cli.eval_)
app.command("tune")(tune_cli.tune)
app.command("ask")(ask_cli.ask)


@app.callback()
def _options(api_key: Annotated[Optional[str], typer.Option(
        "--api-key", help="API key for commands that talk to the daemon (default: LLMOS_API_KEY)")] = None) -> None:
    if api_key:
        os.environ["LLMOS_API_KEY"] = api_key  # read back by load_settings in the daemon client


def main() -> None:
    try:
        app()
    except LlmosError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise SystemExit(exc.exit_code) from None
