"""Run the CLI as a user does: a fresh `python -m llmos` process on a given home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rich.cells import cell_len

from tests.api.server import free_port


def llmos(home: Path, *args: str, builtins: bool = True, stdin: str | None = None,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``llmos ARGS`` with ``home`` as LLMOS_HOME. LLMOS_PORT is a port nothing listens on, so commands
    that would use a running daemon (run, chat) take their in-process path unless given ``--url``."""
    inherited = {k: v for k, v in os.environ.items() if k != "LLMOS_API_KEY"}
    full_env = {**inherited, "LLMOS_HOME": str(home), "LLMOS_BUILTINS": str(builtins).lower(),
                "LLMOS_PORT": str(free_port()), "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "llmos", *args], env=full_env, capture_output=True, text=True,
                          input=stdin, timeout=300)


def assert_fits(output: str, *headers: str, width: int = 80) -> list[str]:
    """The table in ``output`` fits ``width`` columns and shows every header whole, in order, on one line;
    returns the output's lines."""
    lines = output.splitlines()
    assert lines and max(cell_len(line.rstrip()) for line in lines) <= width, output
    header = next((line for line in lines if line.startswith(headers[0] + " ")), None)
    assert header is not None, f"no header line starting with {headers[0]!r}:\n{output}"
    assert "…" not in header, header
    found = [header.find(f"{h} ") if h != headers[-1] else header.rstrip().rfind(h) for h in headers]
    assert -1 not in found and found == sorted(found), f"headers {headers} not all whole in:\n{header}"
    return lines
