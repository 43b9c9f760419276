"""kill -9 of model and dataset imports at chosen points of the write path (after a blob landed,
just before the registering transaction): nothing half-written is ever visible, `llmos doctor` calls
the store clean, `llmos gc` drops the orphans, and the same import then succeeds.

(A kill while a blob's temp file is being written is covered in tests/store/test_crash.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos.data import Datasets
from llmos.runtime import Runtime, open_runtime
from tests.conftest import make_settings
from tests.reliability.conftest import llmos

pytestmark = pytest.mark.slow
KILLED = -9


@pytest.fixture
def empty_home(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    open_runtime(make_settings(root), builtins=False).close()
    return root


def assert_clean_then_retry(root: Path, *retry: str) -> None:
    doctor = llmos(root, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr  # orphan blobs are reported, not failures
    gc = llmos(root, "gc")
    assert gc.returncode == 0 and "removed" in gc.stdout, gc.stderr
    again = llmos(root, *retry)
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("point,after", [
    ("llmos.store.blobs:BlobStore.put_file", True),  # one file stored, the others not yet
    ("llmos.store.registry:Registry.add", False),  # every blob stored, the manifest not yet written
])
def test_model_import_killed_midway_leaves_no_model(builtin_runtime: Runtime, empty_home: Path, point: str,
                                                    after: bool) -> None:
    src = builtin_runtime.store.registry.snapshot("minilm-l6")
    out = llmos(empty_home, "models", "import", str(src), "victim", crash=point, after=after)
    assert out.returncode == KILLED, out.stderr
    rt = open_runtime(make_settings(empty_home), builtins=False)
    assert rt.store.registry.list() == [] and rt.store.blobs.digests()  # blobs landed, no model names them
    rt.close()
    assert_clean_then_retry(empty_home, "models", "import", str(src), "victim")


def test_dataset_import_killed_before_its_row_leaves_no_dataset(empty_home: Path, datasets: Path) -> None:
    tsv = empty_home.parent / "sst2.tsv"
    tsv.write_text("".join((datasets / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines(True)[:200]),
                   encoding="utf-8")
    args = ("data", "import", str(tsv), "sst2")
    out = llmos(empty_home, *args, crash="llmos.data.registry:Datasets._insert")
    assert out.returncode == KILLED, out.stderr
    rt = open_runtime(make_settings(empty_home), builtins=False)
    assert Datasets.of(rt).list() == [] and rt.store.blobs.digests()
    rt.close()
    assert_clean_then_retry(empty_home, *args)
