from pathlib import Path

import shutil

import pytest
import torch
from transformers import AutoConfig, AutoModel

from llmos.errors import Conflict, ImportFailed, IntegrityError, InvalidName, ModelNotFound, UnsafeFormat
from llmos.runtime import Runtime
from llmos.store.importer import ImportOptions
from tests.store.helpers import copy_model, flipped_header, huge_header, truncated, write_weights


def _nothing_stored(rt: Runtime) -> None:
    assert rt.store.registry.list() == []
    assert rt.store.blobs.digests() == []
    assert list(rt.settings.tmp_dir.iterdir()) == []


def test_import_hf_folder(runtime: Runtime, minilm_dir: Path) -> None:
    info = runtime.store.importer.import_path(minilm_dir, "enc:v1")
    m = info.manifest
    assert (info.ref, m.kind, m.architecture, m.tasks, m.dtype) == ("enc:v1", "model", "BertModel", ["embed"], "float32")
    assert 22_000_000 < m.parameters < 23_000_000
    assert m.size_bytes > 90_000_000 and m.context_length == 512
    assert m.license == "apache-2.0"
    assert {"config.json", "model.safetensors", "tokenizer.json", "1_Pooling/config.json"} <= {f.path for f in m.files}
    folder = runtime.store.registry.snapshot("enc:v1")
    assert AutoConfig.from_pretrained(folder).model_type == "bert"
    assert AutoModel.from_pretrained(folder).num_parameters() == m.parameters


def test_same_content_shares_blobs_and_tags(runtime: Runtime, minilm_dir: Path) -> None:
    a = runtime.store.importer.import_path(minilm_dir, "enc:a")
    blobs = runtime.store.blobs.digests()
    b = runtime.store.importer.import_path(minilm_dir, "enc:b")
    assert a.digest == b.digest and runtime.store.blobs.digests() == blobs
    runtime.store.registry.tag("enc:a", "other")
    assert runtime.store.registry.get("other").digest == a.digest


def test_existing_name_conflicts_unless_replaced(runtime: Runtime, minilm_dir: Path) -> None:
    runtime.store.importer.import_path(minilm_dir, "enc")
    with pytest.raises(Conflict, match="already exists"):
        runtime.store.importer.import_path(minilm_dir, "enc")
    info = runtime.store.importer.import_path(minilm_dir, "enc", ImportOptions(replace=True, license="mit"))
    assert info.manifest.license == "mit"


def test_remove_and_gc_free_only_unreferenced_blobs(runtime: Runtime, minilm_dir: Path) -> None:
    reg = runtime.store.registry
    runtime.store.importer.import_path(minilm_dir, "enc:a")
    reg.tag("enc:a", "enc:b")
    reg.remove("enc:a")
    assert reg.gc().blobs_removed == 0
    assert reg.snapshot("enc:b").is_dir()
    reg.remove("enc:b")
    report = reg.gc()
    assert report.blobs_removed > 5 and report.bytes_freed > 90_000_000 and report.snapshots_removed == 1
    assert runtime.store.blobs.digests() == []


def test_unknown_model_suggests_close_names(runtime: Runtime, minilm_dir: Path) -> None:
    runtime.store.importer.import_path(minilm_dir, "minilm-l6")
    with pytest.raises(ModelNotFound, match="Did you mean minilm-l6") as info:
        runtime.store.registry.get("minilm")
    assert info.value.http_status == 404


def test_single_safetensors_file_with_config(runtime: Runtime, minilm_dir: Path, tmp_path: Path) -> None:
    weights = tmp_path / "w" / "encoder.safetensors"
    weights.parent.mkdir()
    weights.symlink_to(minilm_dir / "model.safetensors")
    with pytest.raises(ImportFailed, match="needs its config.json"):
        runtime.store.importer.import_path(weights, "single")
    info = runtime.store.importer.import_path(weights, "single", ImportOptions(config=minilm_dir / "config.json"))
    assert {f.path for f in info.manifest.files} == {"model.safetensors", "config.json"}
    assert info.manifest.tasks == ["embed"]


@pytest.mark.parametrize("breaker,message", [
    (truncated, "truncated"),
    (huge_header, "header declares"),
    (flipped_header, "corrupt"),
    (lambda w: b"", "not a safetensors file"),
])
def test_corrupt_safetensors_are_refused(runtime: Runtime, minilm_dir: Path, tmp_path: Path, breaker, message) -> None:
    folder = copy_model(minilm_dir, tmp_path / "bad")
    write_weights(folder, breaker(minilm_dir / "model.safetensors"))
    with pytest.raises(ImportFailed, match=message):
        runtime.store.importer.import_path(folder, "bad")
    _nothing_stored(runtime)


def test_folder_without_config(runtime: Runtime, minilm_dir: Path, tmp_path: Path) -> None:
    folder = copy_model(minilm_dir, tmp_path / "noconf", skip=("config.json",))
    with pytest.raises(ImportFailed, match="no config.json"):
        runtime.store.importer.import_path(folder, "x")
    _nothing_stored(runtime)


def test_missing_path_and_bad_names(runtime: Runtime, minilm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match="no such file"):
        runtime.store.importer.import_path(tmp_path / "nope", "x")
    for bad in ("../evil", "a/b", "x:..", ".."):
        with pytest.raises(InvalidName):
            runtime.store.importer.import_path(minilm_dir, bad)
    _nothing_stored(runtime)


def test_pickle_weights_refused_unless_allowed(runtime: Runtime, minilm_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save(AutoModel.from_pretrained(minilm_dir).state_dict(), folder / "pytorch_model.bin")
    shutil.copyfile(minilm_dir / "config.json", folder / "config.json")
    assert (folder / "pytorch_model.bin").is_file()
    with pytest.raises(UnsafeFormat, match="pickle"):
        runtime.store.importer.import_path(folder, "p")
    with pytest.raises(UnsafeFormat):
        runtime.store.importer.import_path(folder / "pytorch_model.bin", "p")
    _nothing_stored(runtime)
    info = runtime.store.importer.import_path(folder, "p", ImportOptions(allow_pickle=True))
    paths = {f.path for f in info.manifest.files}
    assert "model.safetensors" in paths and not any(p.endswith(".bin") for p in paths)
    assert info.manifest.lineage.converted_from == "pickle"


@pytest.mark.parametrize("cut", [b"NOPE" + b"\0" * 100, None])
def test_corrupt_gguf_is_refused(runtime: Runtime, smollm2_gguf: Path, tmp_path: Path, cut) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(cut if cut is not None else smollm2_gguf.read_bytes()[: 5 << 20])
    with pytest.raises(ImportFailed, match="GGUF"):
        runtime.store.importer.import_path(bad, "g")
    _nothing_stored(runtime)


def test_adapter_import_links_its_base(runtime: Runtime, minilm_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    runtime.store.importer.import_path(minilm_dir, "enc")
    peft_model = get_peft_model(AutoModel.from_pretrained(minilm_dir),
                                LoraConfig(r=4, target_modules=["query", "value"]))
    peft_model.save_pretrained(tmp_path / "lora")
    with pytest.raises(ImportFailed, match="needs its base"):
        runtime.store.importer.import_path(tmp_path / "lora", "enc-lora")
    info = runtime.store.importer.import_path(tmp_path / "lora", "enc-lora", ImportOptions(parent="enc"))
    assert info.manifest.kind == "adapter" and info.manifest.parent.startswith("enc:latest@sha256:")
    assert info.manifest.tasks == ["embed"]


def test_corrupt_blob_is_refused_when_loading(runtime: Runtime, minilm_dir: Path) -> None:
    info = runtime.store.importer.import_path(minilm_dir, "enc")
    blob = runtime.store.blobs.path(info.manifest.file("config.json").digest)
    blob.chmod(0o644)
    blob.write_text(blob.read_text().replace("384", "385"))
    with pytest.raises(IntegrityError, match="corrupt"):
        runtime.store.registry.snapshot("enc")
    assert [p.what for p in runtime.store.registry.check()] == ["corrupt_blob"]
