"""Crashes and races around imports: kill -9 midway, two imports of one name at once."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llmos.runtime import open_runtime
from tests.conftest import make_settings
from tests.reliability.crashpoint import HELD
from tests.waiting import BACKSTOP_S

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _import_cmd(src: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "llmos", "models", "import", str(src), name]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "LLMOS_HOME": str(home), "LLMOS_BUILTINS": "false"}


def test_kill_during_import_leaves_nothing_visible(minilm_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    open_runtime(make_settings(home), builtins=False).close()
    # The import stops once the first chunk of a blob is in its temp file, says so, and waits to be killed.
    held_r, held_w = os.pipe()
    cmd = [sys.executable, "-m", "tests.reliability.crashpoint", "--hold", str(held_w), "--before",
           "llmos.cli.common:RichProgress.advance", "--", "models", "import", str(minilm_dir), "victim"]
    with open(tmp_path / "stderr", "w+") as err:
        proc = subprocess.Popen(cmd, env={**_env(home), "PYTHONPATH": str(ROOT)}, cwd=ROOT, pass_fds=(held_w,),
                                stdout=subprocess.DEVNULL, stderr=err)
        os.close(held_w)
        with os.fdopen(held_r, "rb") as held:
            said = held.read(len(HELD))  # end of file instead: the import exited without reaching the point
        if said != HELD:
            err.seek(0)
            pytest.fail(f"the import exited ({proc.wait()}) before its crash point:\n{err.read()}")
    assert [p.suffix for p in (home / "tmp").iterdir()] == [".partial"]  # a blob half-written...
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert any((home / "tmp").iterdir())  # ...that the crash left behind...
    rt = open_runtime(make_settings(home), builtins=False)  # ...and the next start removes
    assert list((home / "tmp").iterdir()) == []
    assert rt.store.registry.list() == []
    assert [p for p in rt.store.registry.check() if p.what != "orphan_blob"] == []
    rt.close()


def test_two_imports_of_one_name_at_once(minilm_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    open_runtime(make_settings(home), builtins=False).close()
    procs = [subprocess.Popen(_import_cmd(minilm_dir, "same"), env=_env(home), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(BACKSTOP_S), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 4], results  # one wins; the other is told clearly (exit 4: conflict)
    loser = next(text for code, text in results if code == 4)
    assert "busy" in loser or "already exists" in loser
    rt = open_runtime(make_settings(home), builtins=False)
    assert [i.ref for i in rt.store.registry.list()] == ["same:latest"]
    assert rt.store.registry.check() == []
    rt.close()
