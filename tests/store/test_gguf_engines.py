"""GGUF imports and the engines they can run on: the quantised file kept for llama.cpp, --engine hf,
and architectures llama.cpp does not know refused with their name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmos.errors import ImportFailed
from llmos.runtime import Runtime
from llmos.store.importer import ImportOptions


def _tiny_gguf(path: Path, arch: str) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _nothing_stored(runtime: Runtime) -> None:
    assert runtime.store.registry.list() == []
    assert not any(runtime.settings.blobs_dir.rglob("sha256/*"))


def test_unknown_architecture_is_refused_naming_it(runtime: Runtime, tmp_path: Path) -> None:
    bad = _tiny_gguf(tmp_path / "odd.gguf", "nosucharch")
    with pytest.raises(ImportFailed, match="nosucharch.*--engine hf"):
        runtime.store.importer.import_path(bad, "odd")
    _nothing_stored(runtime)


def test_llamacpp_engine_needs_a_gguf(runtime: Runtime, minilm_dir: Path) -> None:
    with pytest.raises(ImportFailed, match="needs a GGUF"):
        runtime.store.importer.import_path(minilm_dir, "enc", ImportOptions(engine="llamacpp"))
    _nothing_stored(runtime)
    info = runtime.store.importer.import_path(minilm_dir, "enc")
    assert info.manifest.engines == ["hf"]


@pytest.mark.slow
def test_engine_hf_stores_only_the_conversion(runtime: Runtime, smollm2_gguf: Path) -> None:
    info = runtime.store.importer.import_path(smollm2_gguf, "smol-hf", ImportOptions(engine="hf"))
    assert info.manifest.engines == ["hf"]
    assert not any(f.path.endswith(".gguf") for f in info.manifest.files)
