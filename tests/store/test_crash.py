"""Crashes and races around imports: kill -9 midway, two imports of one name at once."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmos.runtime import Runtime, open_runtime
from tests.conftest import make_settings

pytestmark = pytest.mark.slow


def _import_cmd(src: Path, name: str) -> list[str]:
    return [sys.executable, "-m", "llmos", "models", "import", str(src), name]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "LLMOS_HOME": str(home), "LLMOS_BUILTINS": "false"}


def test_kill_during_import_leaves_nothing_visible(builtin_runtime: Runtime, tmp_path: Path) -> None:
    src = builtin_runtime.store.registry.snapshot("smollm2-135m-instruct")  # 540 MB: slow enough to catch
    home = tmp_path / "home"
    open_runtime(make_settings(home), builtins=False).close()
    proc = subprocess.Popen(_import_cmd(src, "victim"), env=_env(home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(p.suffix == ".partial" for p in (home / "tmp").iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "import ended before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any((home / "tmp").iterdir())  # the crash left a partial file...
    rt = open_runtime(make_settings(home), builtins=False)  # ...which the next start removes
    assert list((home / "tmp").iterdir()) == []
    assert rt.store.registry.list() == []
    assert [p for p in rt.store.registry.check() if p.what != "orphan_blob"] == []
    rt.close()


def test_two_imports_of_one_name_at_once(minilm_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    open_runtime(make_settings(home), builtins=False).close()
    procs = [subprocess.Popen(_import_cmd(minilm_dir, "same"), env=_env(home), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 4], results  # one wins; the other is told clearly (exit 4: conflict)
    loser = next(text for code, text in results if code == 4)
    assert "busy" in loser or "already exists" in loser
    rt = open_runtime(make_settings(home), builtins=False)
    assert [i.ref for i in rt.store.registry.list()] == ["same:latest"]
    assert rt.store.registry.check() == []
    rt.close()
