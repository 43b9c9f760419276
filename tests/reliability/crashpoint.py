"""Run an llmos command that kills itself (SIGKILL, like a power cut) at a chosen point in the code.

    python -m tests.reliability.crashpoint [--before|--after] [--hold FD] [--kind NAME=ENTRY] module:Qual.name -- ARGS

wraps ``module:Qual.name`` so that its first call kills the process before the call runs or right
after it returns, then runs ``llmos ARGS``. With ``--hold FD`` the process does not kill itself: it
writes ``HELD`` to file descriptor FD (a pipe the test passed down) and stops there, for the test to
kill it at a point it knows was reached. ``--kind`` registers extra job kinds first (a daemon that
must know a test job kind). Without a crash point (``-``) it only registers the kinds and runs.
Crash points sit in the real code paths, so the tests need no fault hooks in llmos itself.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import signal
import sys
import threading
from typing import Any

HELD = b"held\n"


def arm(target: str, after: bool, hold_fd: int | None = None) -> None:
    module_name, _, qual = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *path, attr = qual.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, attr)

    def stop() -> None:
        if hold_fd is None:
            os.kill(os.getpid(), signal.SIGKILL)
        os.write(hold_fd, HELD)
        threading.Event().wait()  # until the test kills this process

    @functools.wraps(original)
    def crash(*args: Any, **kwargs: Any) -> Any:
        if not after:
            stop()
        result = original(*args, **kwargs)
        stop()
        return result

    setattr(owner, attr, crash)


def main() -> None:
    ap = argparse.ArgumentParser()
    when = ap.add_mutually_exclusive_group()
    when.add_argument("--before", dest="after", action="store_false")
    when.add_argument("--after", dest="after", action="store_true")
    ap.add_argument("--hold", type=int, metavar="FD", help="stop at the point and say so on FD instead of dying")
    ap.add_argument("target", help="module:Qual.name, or - for none")
    ap.add_argument("--kind", action="append", default=[], help="NAME=module:function job kind to register")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    ns = ap.parse_args()
    import llmos.daemon  # noqa: F401 - every package registers its own job kinds before the overrides below
    from llmos.cli import main as llmos_main
    from llmos.jobs.kinds import register_job_kind

    for kind in ns.kind:
        name, _, entry = kind.partition("=")
        register_job_kind(name, entry, replace=True)
    if ns.target != "-":
        arm(ns.target, ns.after, ns.hold)
    sys.argv = ["llmos", *[a for a in ns.args if a != "--"]]
    llmos_main()


if __name__ == "__main__":
    main()
