"""The llmos command line. Every failure exits with a documented code (llmos.errors.ExitCode)."""

from __future__ import annotations

import typer

from llmos.cli import models, run, system
from llmos.cli.common import err
from llmos.errors import LlmosError

app = typer.Typer(help="llmos: an operating system for language models.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
app.add_typer(models.app, name="models")
app.command()(system.serve)
app.command()(system.gc)
app.command()(system.doctor)
app.command()(run.run)
app.command()(run.chat)


def main() -> None:
    try:
        app()
    except LlmosError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise SystemExit(exc.exit_code) from None
