"""Path traversal and symlink tricks in import paths and names: refused with a clear error, and
nothing is read from or written outside where it belongs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from llmos.daemon import create_app
from llmos.engines.base import FakeEngine
from llmos.errors import ImportFailed, InvalidName
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime
from tests.waiting import BACKSTOP_S

TRAVERSALS = ["../evil", "..", "a/../../b", "/etc/passwd", "a/b", ".hidden", "x:../y", "name\x00.txt", "..\\win"]


def folder_copy(minilm_dir: Path, dst: Path) -> Path:
    shutil.copytree(minilm_dir, dst)
    return dst


@pytest.mark.parametrize("name", TRAVERSALS)
def test_model_and_dataset_names_that_could_escape_are_refused(runtime: Runtime, minilm_dir: Path, tmp_path: Path,
                                                               name: str) -> None:
    from llmos.data import Datasets

    with pytest.raises(InvalidName):
        runtime.store.importer.import_path(minilm_dir, name)
    (csv := tmp_path / "d.csv").write_text("text,label\ngood,1\nbad,0\n")
    with pytest.raises(InvalidName):
        Datasets.of(runtime).import_file(csv, name)
    assert runtime.store.registry.list() == [] and not list(runtime.settings.blobs_dir.rglob("*.*"))


def test_directory_links_in_an_import_folder_are_not_followed(runtime: Runtime, minilm_dir: Path,
                                                              tmp_path: Path) -> None:
    src = folder_copy(minilm_dir, tmp_path / "m")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key.txt").write_text("do not store me")
    os.symlink(tmp_path / "secret", src / "up")  # a link out of the folder
    os.symlink(src, src / "loop")  # a link back into itself
    info = runtime.store.importer.import_path(src, "linked")
    paths = [f.path for f in info.manifest.files]
    assert not [p for p in paths if p.startswith(("up/", "loop/"))], paths


@pytest.mark.timeout(BACKSTOP_S)  # a hang guard: a FIFO or /dev/zero read would never end
@pytest.mark.parametrize("trick", ["dev-zero-weights", "fifo-config", "fifo-weights", "dangling-config"])
def test_special_files_behind_links_are_refused_without_hanging(runtime: Runtime, minilm_dir: Path, tmp_path: Path,
                                                                trick: str) -> None:
    src = folder_copy(minilm_dir, tmp_path / "m")
    target = {"dev-zero-weights": "model.safetensors", "fifo-config": "config.json",
              "fifo-weights": "model.safetensors", "dangling-config": "config.json"}[trick]
    (src / target).unlink()
    if trick == "dev-zero-weights":
        os.symlink("/dev/zero", src / target)  # endless zeros: must not be read to the end
    elif trick.startswith("fifo"):
        os.mkfifo(src / target)  # opening it would block forever
    else:
        os.symlink(tmp_path / "nowhere.json", src / target)
    with pytest.raises(ImportFailed):
        runtime.store.importer.import_path(src, "tricked")
    assert runtime.store.registry.list() == []


def test_a_linked_weights_file_is_imported_by_content(runtime: Runtime, minilm_dir: Path, tmp_path: Path) -> None:
    """Hugging Face cache snapshots are folders of links into a blob folder: a link to a regular file
    is read (the importing user can read it anyway) and stored as a copy, never as a link."""
    src = folder_copy(minilm_dir, tmp_path / "m")
    (src / "model.safetensors").rename(tmp_path / "blob")
    os.symlink(tmp_path / "blob", src / "model.safetensors")
    info = runtime.store.importer.import_path(src, "cached")
    entry = info.manifest.file("model.safetensors")
    assert entry is not None and not runtime.store.blobs.path(entry.digest).is_symlink()


@pytest.fixture
def api(runtime: Runtime) -> TestClient:
    kernel = Kernel(runtime.settings, runtime.store.registry, engine_factory=lambda ref: FakeEngine(ref))
    return TestClient(create_app(runtime, kernel))  # no lifespan: no job runner


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "a/b", "%2e%2e%2fx"])
def test_api_refuses_escaping_names(api: TestClient, name: str) -> None:
    for r in (api.post("/admin/load", json={"model": name}), api.get(f"/v1/datasets/{name}"),
              api.post("/v1/embeddings", json={"model": name, "input": ["x"]})):
        assert 400 <= r.status_code < 500 and "Traceback" not in r.text, (r.status_code, r.text)


def test_an_upload_named_with_a_path_stays_in_the_store(api: TestClient, runtime: Runtime, tmp_path: Path) -> None:
    evil = tmp_path / "escaped.csv"
    files = {"file": (f"../../../../..{evil}", b"text,label\ngood film,1\nbad film,0\n", "text/csv")}
    r = api.post("/v1/datasets", data={"name": "uploaded"}, files=files)
    assert r.status_code == 201, r.text
    assert not evil.exists() and list(runtime.settings.tmp_dir.iterdir()) == []
    bad = api.post("/v1/datasets", data={"name": "../uploaded"}, files=files)
    assert bad.status_code == 400 and "invalid dataset name" in bad.text
