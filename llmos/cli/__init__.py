"""The llmos command line. Every failure exits with a documented code (llmos.errors.ExitCode)."""

from __future__ import annotations

import typer

from llmos.cli import daemon, models, run, system
from llmos.cli import data
from llmos.cli import jobs
from llmos.cli.common import err
from llmos.errors import LlmosError

app = typer.Typer(help="llmos: an operating system for language models.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
app.add_typer(models.app, name="models")
app.add_typer(data.app, name="data")
app.add_typer(jobs.app, name="jobs")
app.command()(system.serve)
app.command()(system.gc)
app.command()(system.doctor)
app.command()(run.run)
app.command()(run.chat)
app.command()(daemon.ps)
app.command()(daemon.load)
app.command()(daemon.unload)


def main() -> None:
    try:
        app()
    except LlmosError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise SystemExit(exc.exit_code) from None
