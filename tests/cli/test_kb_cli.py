"""`llmos kb` in-process through Typer's CliRunner, with no daemon listening (the CLI's own kernel and
the real MiniLM-L6): create, add real files (one that cannot be read is listed, the rest are added),
list, show, search, rm."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from llmos.cli import app
from llmos.errors import NotFound
from llmos.runtime import Runtime, open_runtime
from tests.api.server import free_port
from tests.conftest import ModuleDirs, copy_builtin, make_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(builtin_runtime: Runtime, module_dirs: ModuleDirs) -> Path:
    """A home whose store holds the built-ins (blobs linked from the session store)."""
    path = module_dirs("kb-cli") / "home"
    rt = open_runtime(make_settings(path), builtins=False)
    for name in ("minilm-l6", "smollm2-135m-instruct"):
        copy_builtin(rt, builtin_runtime, name)
    rt.close()
    return path


@pytest.fixture(scope="module")
def files(datasets: Path, module_dirs: ModuleDirs) -> list[Path]:
    """Two FAQ pages written from Banking77 rows (one Markdown, one HTML) and a PDF that is not one."""
    folder = module_dirs("kb-files")
    with open(datasets / "banking77" / "train.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    card = [r["text"] for r in rows if r["category"] == "card_arrival"][:20]
    rate = [r["text"] for r in rows if r["category"] == "exchange_rate"][:20]
    (folder / "card_arrival.md").write_text("# Card arrival\n\n" + "\n\n".join(card) + "\n", encoding="utf-8")
    (folder / "exchange_rate.html").write_text("<html><body><h1>Exchange rate</h1>" + "".join(
        f"<p>{q}</p>" for q in rate) + "</body></html>", encoding="utf-8")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a PDF body\n")
    return [folder / "card_arrival.md", folder / "exchange_rate.html", folder / "broken.pdf"]


def kb(home: Path, *args: str) -> Result:
    env = {"LLMOS_HOME": str(home), "LLMOS_PORT": str(free_port()), "COLUMNS": "200", "LLMOS_API_KEY": ""}
    return CliRunner().invoke(app, ["kb", *args], env=env)


def test_the_kb_commands_create_add_search_and_remove(home: Path, files: list[Path]) -> None:
    created = kb(home, "create", "faq", "--chunk-size", "400", "--json")
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["chunk_size"] == 400
    added = kb(home, "add", "faq", *map(str, files), "--json")
    assert added.exit_code == 0, added.output
    report = json.loads(added.stdout)
    assert sorted(report["added"]) == ["card_arrival.md", "exchange_rate.html"]
    assert [f["file"] for f in report["failed"]] == ["broken.pdf"] and report["chunks"] > 0
    listed = kb(home, "list")
    assert listed.exit_code == 0 and "faq" in listed.output
    shown = json.loads(kb(home, "show", "faq", "--json").stdout)
    assert {d["name"] for d in shown["document_list"]} == {"card_arrival.md", "exchange_rate.html"}
    found = kb(home, "search", "faq", "what exchange rate do you use for my transfer?", "-k", "3", "--json")
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["data"][0]["document"] == "exchange_rate.html"
    table = kb(home, "search", "faq", "my card still has not arrived")
    assert table.exit_code == 0 and "card_arrival.md" in table.stdout.split("\n", 4)[3]  # the first row
    removed = kb(home, "rm", "faq")
    assert removed.exit_code == 0 and "deleted faq" in removed.output
    assert json.loads(kb(home, "list", "--json").stdout) == []
    gone = kb(home, "search", "faq", "card")
    assert isinstance(gone.exception, NotFound)  # `llmos` turns it into exit code 3 with the message
