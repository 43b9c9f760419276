"""The registry: immutable versions, lineage, lookups, tenants, and stored content."""

from __future__ import annotations

import hashlib

import pytest

from llmos.data import ClassifyRow, Datasets, ImportOptions
from llmos.errors import InvalidInput, NotFound
from llmos.runtime import Runtime


def test_versions_lineage_and_lookup(reg: Datasets, head) -> None:  # type: ignore[no-untyped-def]
    path = head("sms_spam/SMSSpamCollection", 400)
    v1 = reg.import_file(path, "spam")
    v2 = reg.clean("spam")
    v3 = reg.split("spam")
    assert [v1.version, v2.version, v3.version] == [1, 2, 3]
    assert (v1.parent, v2.parent, v3.parent) == (None, "spam@1", "spam@2")
    assert reg.get("spam").version == 3 and reg.get("spam@1") == v1 and reg.get("spam", 2) == v2
    assert [i.ref for i in reg.list()] == ["spam@3"]
    assert [i.ref for i in reg.versions("spam")] == ["spam@1", "spam@2", "spam@3"]
    assert v3.source == v1.source  # derived versions keep the source and mapping they came from
    first = next(reg.rows("spam", 1))
    assert isinstance(first, ClassifyRow) and first.split is None
    assert {r.split for r in reg.rows("spam")} == {"train", "validation", "test"}


def test_blob_is_canonical_jsonl_named_by_its_sha256(reg: Datasets, runtime: Runtime, write) -> None:  # type: ignore[no-untyped-def]
    info = reg.import_file(write("a.csv", "text,label\nhé,x\nb,y\n"), "tiny")
    data = runtime.store.blobs.open_verified(info.digest).read_bytes()
    assert data == '{"label":"x","text":"hé"}\n{"label":"y","text":"b"}\n'.encode()
    assert info.digest == "sha256:" + hashlib.sha256(data).hexdigest() and info.size_bytes == len(data)
    same = reg.import_file(write("b.tsv", "text\tlabel\nhé\tx\nb\ty\n"), "tiny")
    assert same.version == 2 and same.digest == info.digest  # equal rows, one blob
    assert runtime.store.blobs.digests() == [info.digest]


def test_not_found_names_close_matches(reg: Datasets, write) -> None:  # type: ignore[no-untyped-def]
    reg.import_file(write("a.csv", "text,label\na,x\nb,y\n"), "banking77")
    with pytest.raises(NotFound, match=r"dataset 'banking' not found. Did you mean banking77\?"):
        reg.get("banking")
    with pytest.raises(NotFound, match=r"dataset 'banking77' has no version 9; versions: 1"):
        reg.get("banking77@9")
    with pytest.raises(NotFound, match="There are no datasets yet"):
        Datasets(reg.db, reg.blobs, reg.locks, tenant="other").get("banking77")


def test_tenants_are_isolated(reg: Datasets, write) -> None:  # type: ignore[no-untyped-def]
    a = Datasets(reg.db, reg.blobs, reg.locks, tenant="a")
    b = Datasets(reg.db, reg.blobs, reg.locks, tenant="b")
    a.import_file(write("a.csv", "text,label\na,x\nb,y\n"), "shared-name")
    a.import_file(write("a.csv", "text,label\na,x\nb,y\n"), "shared-name")
    mine = b.import_file(write("b.csv", "text,label\nc,x\nd,y\n"), "shared-name")
    assert mine.version == 1 and mine.tenant == "b"  # b's numbering ignores a's versions
    assert [i.ref for i in a.list()] == ["shared-name@2"] and [i.ref for i in b.list()] == ["shared-name@1"]
    assert reg.list() == []  # the default tenant sees neither
    with pytest.raises(NotFound):
        b.get("shared-name@2")
    with pytest.raises(NotFound):
        reg.clean("shared-name")


def test_append_a_dev_file_as_the_validation_split(reg: Datasets, datasets, head) -> None:  # type: ignore[no-untyped-def]
    reg.import_file(head("sst2/train.tsv", 501), "sst2")
    info = reg.import_file(datasets / "sst2" / "dev.tsv", "sst2", ImportOptions(split="validation", append=True))
    assert info.version == 2 and info.parent == "sst2@1"
    assert info.counts.splits == {"train": 500, "validation": 872, "test": 0}
    assert info.derivation and info.derivation.operation == "append"
    assert info.derivation.params == {"file": "dev.tsv", "split": "validation"}
    with pytest.raises(InvalidInput, match="is split; say which split the new rows join"):
        reg.import_file(datasets / "sst2" / "dev.tsv", "sst2", ImportOptions(append=True))


def test_append_needs_the_same_task(reg: Datasets, write) -> None:  # type: ignore[no-untyped-def]
    reg.import_file(write("a.csv", "text,label\na,x\nb,y\n"), "d")
    with pytest.raises(InvalidInput, match="cannot append sft rows to d@1, a classify dataset"):
        reg.import_file(write("s.jsonl", '{"instruction": "q", "output": "a"}\n'), "d", ImportOptions(append=True))
    with pytest.raises(NotFound):
        reg.import_file(write("a.csv", "text,label\na,x\nb,y\n"), "nope", ImportOptions(append=True))
    assert [i.ref for i in reg.list(all_versions=True)] == ["d@1"]


def test_gc_keeps_dataset_blobs(reg: Datasets, runtime: Runtime, write) -> None:  # type: ignore[no-untyped-def]
    info = reg.import_file(write("a.csv", "text,label\na,x\nb,y\n"), "kept")
    runtime.store.registry.gc()
    assert runtime.store.blobs.has(info.digest)
    assert len(list(reg.rows("kept"))) == 2
