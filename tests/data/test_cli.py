"""`llmos data ...` as a script uses it: real processes, exit codes, tables and --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmos.cli.data import _mapping
from llmos.data import Datasets
from llmos.errors import ExitCode, InvalidInput
from llmos.runtime import open_runtime
from tests.conftest import make_settings
from tests.waiting import BACKSTOP_S


def llmos(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMOS_HOME": str(home), "LLMOS_BUILTINS": "false", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "llmos", "data", *args], env=env, capture_output=True, text=True,
                          timeout=BACKSTOP_S)


@pytest.mark.slow
def test_import_show_clean_split_augment_list(tmp_path: Path, head) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    spam = head("sms_spam/SMSSpamCollection", 500)
    out = llmos(home, "import", str(spam), "spam")
    assert out.returncode == 0, out.stderr
    assert "imported spam@1 from SMSSpamCollection" in out.stdout
    assert "Go until jurong point" in out.stdout and "ham" in out.stdout  # the preview table

    out = llmos(home, "clean", "spam", "--json")
    assert out.returncode == 0, out.stderr
    cleaned = json.loads(out.stdout)
    assert cleaned["version"] == 2 and cleaned["derivation"]["operation"] == "clean"
    assert cleaned["derivation"]["report"]["rows_in"] == 500 and len(cleaned["preview"]) == 5

    out = llmos(home, "split", "spam", "--validation", "0.2", "--test", "0.2", "--seed", "3")
    assert out.returncode == 0, out.stderr
    assert "split into spam@3" in out.stdout and "(stratified)" in out.stdout

    out = llmos(home, "augment", "spam", "--copies", "2", "--ops", "swap,delete")
    assert out.returncode == 0, out.stderr and "augmented into spam@4" in out.stdout

    table = llmos(home, "show", "spam@3", "--rows", "2").stdout
    assert "spam@3" in table and "parent  spam@2" in table and "made by  split" in table
    assert "label=0, text=1" in table and "validation" in table

    listed = json.loads(llmos(home, "list", "--all", "--json").stdout)
    assert [(d["name"], d["version"], d["parent"]) for d in listed] == [
        ("spam", 1, None), ("spam", 2, "spam@1"), ("spam", 3, "spam@2"), ("spam", 4, "spam@3")]
    assert set(listed[3]["counts"]["splits"]) == {"train", "validation", "test"}


def test_import_options_and_dry_run(tmp_path: Path, head) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    conll = head("conll2003/valid.txt", 200)
    out = llmos(home, "import", str(conll), "pos", "--map", "tags=1", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    preview = json.loads(out.stdout)
    assert preview["task"] == "tag" and preview["source"]["mapping"] == {"tags": "1", "tokens": "0"}
    rt = open_runtime(make_settings(home), builtins=False)
    try:
        assert Datasets.of(rt).list() == []  # a dry run registers nothing
    finally:
        rt.close()


def test_map_option_parsing() -> None:
    assert _mapping(["text=sentence", " label = 0 "]) == {"text": "sentence", "label": "0"}
    assert _mapping([]) is None
    with pytest.raises(InvalidInput, match=r"--map 'text': expected FIELD=COLUMN"):
        _mapping(["text"])


def test_errors_have_exit_codes_and_clear_messages(tmp_path: Path) -> None:
    home = tmp_path / "home"
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    out = llmos(home, "import", str(bad), "x", "--task", "classify")
    assert out.returncode == ExitCode.USAGE
    assert "no text or label column for task classify; columns found: foo, bar" in out.stderr
    assert "Traceback" not in out.stderr
    out = llmos(home, "show", "nope")
    assert out.returncode == ExitCode.NOT_FOUND and "dataset 'nope' not found" in out.stderr
