"""`llmos run` and `llmos chat` through a running daemon: an auth-on app on a loopback port serving the
real SmolLM2, whose request log says which requests it answered, for which key. Then the tables of the
commands that ask the daemon, in an 80-column terminal."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from llmos.daemon import create_app
from llmos.auth import create_key
from llmos.client import Client
from llmos.db.tables import RequestLog
from llmos.errors import ExitCode
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime
from tests.api.server import serving
from tests.cli.proc import assert_fits, llmos
from tests.conftest import make_settings

pytestmark = pytest.mark.slow
SMOL = "smollm2-135m-instruct"
QUESTION = "What is the capital of France?"


@dataclass
class Daemon:
    url: str
    kernel: Kernel
    runtime: Runtime
    key: str
    admin: str
    tenant: str

    def logged(self) -> list[RequestLog]:
        """This key's request-log rows, oldest first."""
        with self.runtime.db.session() as s:
            q = select(RequestLog).where(RequestLog.tenant == self.tenant).order_by(RequestLog.created_at)
            rows = list(s.scalars(q))
            s.expunge_all()
            return rows


@pytest.fixture(scope="module")
def daemon(builtin_runtime: Runtime) -> Iterator[Daemon]:
    s = make_settings(builtin_runtime.settings.home, database_url=builtin_runtime.settings.database_url,
                      auth="on", log_prompts=True, engine="hf")  # the fp32 engine's answers (llama.cpp: tests/engines)
    rt = Runtime(s, builtin_runtime.db, builtin_runtime.store)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    _, raw = create_key(rt.db, tenant=tenant, name="cli test", scopes=["infer"])
    _, admin = create_key(rt.db, tenant=tenant, name="cli admin", scopes=["admin"])
    kernel = Kernel(s, rt.store.registry)
    with serving(create_app(rt, kernel)) as url:
        yield Daemon(url, kernel, rt, raw, admin, tenant)
    kernel.close()


@pytest.fixture(scope="module")
def home(builtin_runtime: Runtime) -> Path:
    return builtin_runtime.settings.home


def test_run_goes_through_the_daemon_and_leaves_the_model_loaded(daemon: Daemon, home: Path) -> None:
    before = len(daemon.logged())
    out = llmos(home, "--api-key", daemon.key, "run", SMOL, QUESTION, "-n", "20", "--url", daemon.url)
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
    [row] = daemon.logged()[before:]
    assert (row.route, row.status) == ("chat", 200)
    assert json.loads(row.prompt) == [{"role": "user", "content": QUESTION}]  # the conversation's turns
    assert row.output.strip() == out.stdout.strip()  # the daemon generated exactly what was printed
    assert any(m.model == f"{SMOL}:latest" and m.loaded for m in daemon.kernel.ps())


def test_chat_keeps_one_conversation_on_the_daemon(daemon: Daemon, home: Path) -> None:
    before = len(daemon.logged())
    out = llmos(home, "chat", SMOL, "-t", "0", "-n", "16", "--url", daemon.url,
                stdin=f"{QUESTION}\nAnd of Germany?\n", env={"LLMOS_API_KEY": daemon.key})
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout and "Berlin" in out.stdout
    turns = daemon.logged()[before:]
    assert [t.route for t in turns] == ["chat", "chat"]
    assert QUESTION in turns[1].prompt and "And of Germany?" in turns[1].prompt  # the history went along


def test_a_daemon_that_refuses_is_reported_not_bypassed(daemon: Daemon, home: Path) -> None:
    before = len(daemon.logged())
    no_key = llmos(home, "run", SMOL, QUESTION, "-n", "4", "--url", daemon.url)
    assert no_key.returncode == ExitCode.USAGE and no_key.stdout == ""
    assert "key" in no_key.stderr.lower() and "Traceback" not in no_key.stderr
    wrong = llmos(home, "--api-key", daemon.key, "run", "minilm-l6", "hello", "--url", daemon.url)
    assert wrong.returncode == ExitCode.USAGE and "cannot generate" in wrong.stderr
    missing = llmos(home, "--api-key", daemon.key, "run", "no-such-model", "hello", "--url", daemon.url)
    assert missing.returncode == ExitCode.NOT_FOUND and "not found" in missing.stderr
    assert len(daemon.logged()) == before  # refused before any generation, and none ran in-process


def test_raw_completion_through_the_daemon(daemon: Daemon, home: Path) -> None:
    before = len(daemon.logged())
    out = llmos(home, "--api-key", daemon.key, "run", SMOL, "The capital of France is", "--raw", "-n", "8",
                "--url", daemon.url)
    assert out.returncode == 0, out.stderr
    [row] = daemon.logged()[before:]
    assert row.route == "completion" and row.output.strip() == out.stdout.strip()


def test_daemon_tables_fit_80_columns(daemon: Daemon, home: Path) -> None:
    """ps lists the loaded model, alerts the default rules, feedback list a rating given through the API."""
    client = Client(daemon.url, api_key=daemon.key)
    assert client.chat(SMOL, QUESTION, max_tokens=4, temperature=0)
    client.feedback(daemon.logged()[-1].id, rating=1, correction="The capital of France is Paris, on the Seine.",
                    comment="right, and short enough")
    client.close()

    def table(*args: str) -> str:
        out = llmos(home, "--api-key", daemon.admin, *args, env={"COLUMNS": "80"})
        assert out.returncode == 0, out.stderr
        return out.stdout

    ps = assert_fits(table("ps", "--url", daemon.url),
                     "MODEL", "ENGINE", "MEMORY", "REFS", "WAIT", "RUN", "TOK/S", "UNLOAD IN")
    assert any(line.startswith(f"{SMOL}:latest ") and "MiB" in line for line in ps)
    rules = assert_fits(table("alerts", "list", "--url", daemon.url),
                        "RULE", "SEV", "STATE", "VALUE", "LIMIT", "DETAIL")
    assert any(line.startswith("canary-rolled-back ") for line in rules)
    assert_fits(table("jobs", "list", "--url", daemon.url), "ID", "KIND", "STATE", "PROGRESS", "ETA", "METRICS")
    feedback = assert_fits(table("feedback", "list", "--tenant", daemon.tenant),
                           "ID", "MODEL", "RATING", "CORRECTION", "COMMENT", "AT")
    assert any("+1" in line and "ago" in line for line in feedback)
