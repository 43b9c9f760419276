"""The CLI's tables in an 80-column terminal, on real data: every header whole, no line wider than 80.

(The tables of daemon commands, `ps`, `alerts list`, `jobs list`, `feedback list`, are checked in
test_run_daemon.py, beside a running daemon.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from llmos.cli import app
from llmos.cli.tables import ago, count, new_table, size
from llmos.runtime import Runtime, open_runtime
from tests.conftest import copy_builtin, make_settings
from tests.cli.proc import assert_fits


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Iterator:  # type: ignore[type-arg]
    """``cli(home, *args, builtins=...)``: the command in this process, printing to an 80-column terminal."""
    monkeypatch.delenv("LLMOS_API_KEY", raising=False)

    def invoke(home: Path, *args: str, builtins: bool = False) -> Result:
        env = {"LLMOS_HOME": str(home), "LLMOS_BUILTINS": str(builtins).lower(), "COLUMNS": "80"}
        result = CliRunner().invoke(app, list(args), env=env)
        assert result.exit_code == 0, (result.output, result.exception)
        return result

    yield invoke


@pytest.fixture
def builtins_only(builtin_runtime: Runtime, tmp_path: Path) -> Iterator[Runtime]:
    """A store with the two built-in models alone (the session store holds what other tests added)."""
    rt = open_runtime(make_settings(tmp_path / "home"), builtins=False)
    for name in ("smollm2-135m-instruct", "minilm-l6"):
        copy_builtin(rt, builtin_runtime, name)
    yield rt
    rt.close()


def test_models_list_shows_the_builtins_whole(cli, builtins_only: Runtime) -> None:  # type: ignore[no-untyped-def]
    home = builtins_only.settings.home
    out = cli(home, "models", "list").output
    lines = assert_fits(out, "NAME", "TASKS", "PARAMS", "SIZE", "ID", "CREATED")
    assert "…" not in out
    smol = next((line for line in lines if line.startswith("smollm2-135m-instruct:latest ")), None)
    assert smol is not None, out
    info = builtins_only.store.registry.get("smollm2-135m-instruct")
    assert "generate" in smol and "MiB" in smol and info.digest[7:19] in smol and "ago" in smol
    history = cli(home, "models", "history", "smollm2-135m-instruct").output
    assert_fits(history, "VERSION", "SERVING", "KIND", "METRICS", "MEASURED ON", "CREATED")


def _slice(src: Path, out: Path, lines: int) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fh:
        out.write_bytes(b"".join(line for _, line in zip(range(lines), fh)))
    return out


def test_dataset_tables(cli, datasets: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    banking = _slice(datasets / "banking77" / "train.csv", tmp_path / "s" / "train.csv", 400)
    conll = _slice(datasets / "conll2003" / "valid.txt", tmp_path / "s" / "valid.txt", 300)
    code = tmp_path / "s" / "code.json"
    code.write_text(json.dumps(json.loads((datasets / "code_alpaca_2k" / "code_alpaca_2k.json").read_text())[:40]))
    assert_fits(cli(home, "data", "import", str(banking), "banking77-support-intents").output, "TEXT", "LABEL")
    assert_fits(cli(home, "data", "split", "banking77-support-intents").output, "TEXT", "LABEL", "SPLIT")
    assert_fits(cli(home, "data", "import", str(conll), "conll").output, "TOKENS")
    assert_fits(cli(home, "data", "import", str(code), "code").output, "INSTRUCTION", "INPUT", "OUTPUT")
    out = cli(home, "data", "list", "--all").output
    lines = assert_fits(out, "NAME", "TASK", "ROWS", "SPLITS", "LABELS", "CREATED")
    assert "…" not in out
    split = next(line for line in lines if line.startswith("banking77-support-intents@2 "))
    assert "/" in split and "classify" in split  # train/validation/test counts


def test_doctor_and_keys(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    assert_fits(cli(home, "doctor").output, "CHECK", "STATUS", "DETAIL")
    cli(home, "keys", "create", "--tenant", "acme-research", "--name", "nightly evaluation bot", "--scope", "infer",
        "--scope", "read", "--scope", "train", "--rate-limit", "2.5", "--quota", "250000")
    cli(home, "keys", "create", "--name", "ops", "--scope", "admin")
    out = cli(home, "keys", "list").output
    lines = assert_fits(out, "ID", "TENANT", "NAME", "SCOPES", "LIMITS", "CREATED", "STATE")
    assert "…" not in out
    acme = next(line for line in lines if "acme-research" in line)  # a tenant is never broken
    assert acme.startswith("key_") and "active" in acme and "2.5/s" in acme


def test_cell_formats() -> None:
    assert [size(n) for n in (512, 91_617_632, 541_614_976, 3 * 1024**3)] == ["512 B", "87.4 MiB", "517 MiB",
                                                                              "3.0 GiB"]
    assert [count(n) for n in (77, 67_349, 250_000, 1_234_567)] == ["77", "67,349", "250k", "1.2M"]
    now = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert [ago(now - timedelta(seconds=s), now) for s in (5, 300, 7200, 3 * 86400, 100 * 86400, 800 * 86400)] == [
        "5s ago", "5m ago", "2h ago", "3d ago", "3mo ago", "2y ago"]
    assert ago("2026-05-01T11:00:00", now) == "1h ago"  # naive ISO text from the API: UTC
    with pytest.raises(ValueError, match="SIZE"):
        new_table("NAME", wrap=["SIZE"])
