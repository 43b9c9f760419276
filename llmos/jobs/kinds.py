"""The job-kind registry: a name -> the ``"module:function"`` a runner process calls.

Built-in kinds (fine-tune, evaluate, tune) register the same way extensions do, one call each, in the
module that owns them. The daemon resolves the name when it launches a runner and hands the entry
string to the runner process, so a kind registered only in the daemon (a plugin, a test module) still
runs: the runner imports the entry's module itself.

The entry is called as ``fn(ctx: JobContext, spec: dict) -> BaseModel | dict | None``; that is the job's
result (a pydantic model is stored as its JSON form; readers parse it back with the same model).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmos.errors import InvalidInput
from llmos.registry import Registry

JobEntry = Callable[..., Any]  # (ctx, spec) -> pydantic model | dict | None

_ENTRY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")  # fits jobs.kind (32 chars)


@dataclass(frozen=True)
class JobKind:
    entry: str  # "package.module:function"
    driver: bool = False  # waits on jobs it queues itself; does not count against max_jobs


KINDS: Registry[JobKind] = Registry("job kind")


def register_job_kind(name: str, entry: str, *, replace: bool = False, driver: bool = False) -> None:
    """Make ``name`` submittable; ``entry`` is ``"package.module:function"`` (imported lazily, in the runner).

    A ``driver`` kind mostly waits on jobs it queues itself (a tuning job and its trials): its runner
    does not count against ``max_jobs``, or with one slot it would hold the slot its trials need."""
    if not _NAME.match(name):
        raise InvalidInput(f"job kind {name!r} must be 1-32 characters: lowercase letters, digits, '_', '-', '.'")
    if not _ENTRY.match(entry):
        raise InvalidInput(f"job kind entry {entry!r} must look like 'package.module:function'")
    KINDS.register(name, JobKind(entry, driver), replace=replace)


def unregister_job_kind(name: str) -> None:
    KINDS.unregister(name)


def is_driver_kind(name: str) -> bool:
    kind = KINDS.find(name)
    return kind is not None and kind.driver


def job_kinds() -> dict[str, str]:
    return {name: kind.entry for name, kind in KINDS.items().items()}


def job_kind_entry(name: str) -> str:
    """The entry of a registered kind; InvalidInput naming the known kinds otherwise."""
    return KINDS.get(name).entry


def load_entry(entry: str) -> JobEntry:
    """Import ``"module:function"`` (in the runner process; import errors fail the job with a traceback)."""
    module_name, _, attr = entry.partition(":")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise TypeError(f"job entry {entry!r} is not callable")
    return fn

