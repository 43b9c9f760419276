"""Knowledge bases end to end on real files and the real MiniLM: create, add, search, versions, remove."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmos.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, WrongTask
from llmos.kb import KernelEmbedder, KnowledgeBases, search
from llmos.kb.parse import MAX_FILE_BYTES, parse_bytes
from llmos.kernel.core import Kernel
from tests.kb.conftest import EMBED


def _files(paths: list[Path]) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in paths]


def test_lifecycle_with_real_files(kbs: KnowledgeBases, embedder_for, docs: list[Path]) -> None:  # type: ignore[no-untyped-def]
    info = kbs.create("help", embedder_for(EMBED), chunk_size=200, overlap=40)
    assert (info.version, info.documents, info.embed_model) == (1, 0, EMBED)
    report = kbs.add("help", _files(docs), embedder_for)
    assert report.version == 2 and not report.failed
    assert sorted(report.added) == sorted(["refunds.md", "cards.html", "topup.txt",
                                           "faq.csv#What is the exchange rate?", "faq.csv#How do I change my PIN?"])
    html = kbs.text("help", "cards.html")
    assert "Freeze your card" in html and "var x" not in html and "color:red" not in html

    for mode in ("hybrid", "vector", "keyword"):
        found = search(kbs, "help", "my card was stolen, what should I do?", embedder_for(EMBED), k=3, mode=mode)
        assert found.data[0].document == "cards.html", (mode, found.data)
    hit = search(kbs, "help", "how long does a refund take", embedder_for(EMBED), k=2).data[0]
    assert hit.document == "refunds.md" and "5 to 7 business days" in hit.text
    assert hit.vector_rank == 1 and hit.keyword_rank is not None

    again = kbs.add("help", _files(docs[:1]), embedder_for)  # the same bytes: nothing new, no new version
    assert again.unchanged == ["refunds.md"] and again.version == 2
    docs[0].write_text("# Refunds\n\nRefunds now reach your account within 2 business days.\n")
    changed = kbs.add("help", _files(docs[:1]), embedder_for)
    assert changed.replaced == ["refunds.md"] and changed.version == 3
    detail = kbs.show("help")
    assert [v.operation for v in detail.versions] == ["create", "add", "add"]
    assert detail.documents == 5 and all(d.chunks >= 1 for d in detail.document_list)
    assert "2 business days" in search(kbs, "help", "refund time", embedder_for(EMBED), k=1).data[0].text

    kbs.remove("help")
    with pytest.raises(NotFound):
        kbs.get("help")
    # a new base may get the deleted one's row id: it must never be served the old cached index
    kbs.create("help2", embedder_for(EMBED))
    kbs.add("help2", _files(docs[2:3]), embedder_for)
    assert {p.document for p in search(kbs, "help2", "refund card", embedder_for(EMBED), k=5).data} == {"topup.txt"}


def test_long_documents_chunk_with_overlap(kbs: KnowledgeBases, embedder_for) -> None:  # type: ignore[no-untyped-def]
    kbs.create("long", embedder_for(EMBED), chunk_size=120, overlap=30)
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(60))
    report = kbs.add("long", [("long.txt", text.encode())], embedder_for)
    assert report.chunks > 10
    found = search(kbs, "long", "Sentence number 42", embedder_for(EMBED), k=1, mode="keyword").data[0]
    assert "42" in found.text


def test_bad_files_fail_alone(kbs: KnowledgeBases, embedder_for, docs: list[Path]) -> None:  # type: ignore[no-untyped-def]
    kbs.create("help", embedder_for(EMBED))
    report = kbs.add("help", [("broken.pdf", b"%PDF-1.4 this is not a pdf"), ("x.docx", b"PK.."),
                              ("bad.txt", b"\xff\xfe\x00bad"), *_files(docs[2:3])], embedder_for)
    assert report.added == ["topup.txt"]
    assert sorted(f.file for f in report.failed) == ["bad.txt", "broken.pdf", "x.docx"]
    assert all(f.reason for f in report.failed)
    with pytest.raises(InvalidInput, match="nothing was added"):
        kbs.add("help", [("broken.pdf", b"%PDF-1.4 junk")], embedder_for)
    assert kbs.get("help").version == 2  # the failed add made no version
    with pytest.raises(PayloadTooLarge):
        parse_bytes("huge.txt", b"a" * (MAX_FILE_BYTES + 1))


def test_a_real_pdf_is_read(kbs: KnowledgeBases, embedder_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    page = writer.add_blank_page(width=300, height=200)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject(
        {NameObject("/F1"): writer._add_object(font)})})
    content = DecodedStreamObject()
    content.set_data(b"BT /F1 12 Tf 20 100 Td (Overdraft fees are 5 euros per month.) Tj ET")
    page[NameObject("/Contents")] = writer._add_object(content)
    path = tmp_path / "fees.pdf"
    with open(path, "wb") as fh:
        writer.write(fh)
    kbs.create("pdfs", embedder_for(EMBED))
    assert kbs.add("pdfs", _files([path]), embedder_for).added == ["fees.pdf"]
    assert "Overdraft fees" in kbs.text("pdfs", "fees.pdf")


def test_names_and_models_are_checked(kbs: KnowledgeBases, embedder_for, kernel: Kernel) -> None:  # type: ignore[no-untyped-def]
    kbs.create("one", embedder_for(EMBED))
    with pytest.raises(Conflict):
        kbs.create("one", embedder_for(EMBED))
    with pytest.raises(InvalidInput):
        kbs.create("../evil", embedder_for(EMBED))
    with pytest.raises(InvalidInput, match="overlap"):
        kbs.create("two", embedder_for(EMBED), chunk_size=100, overlap=80)
    with pytest.raises(NotFound):
        KernelEmbedder.of(kernel, "no-such-model", "acme")


def test_tenants_do_not_see_each_other(kb_runtime, embedder_for, docs: list[Path]) -> None:  # type: ignore[no-untyped-def]
    acme, other = KnowledgeBases.of(kb_runtime, "acme"), KnowledgeBases.of(kb_runtime, "other")
    acme.create("help", embedder_for(EMBED))
    acme.add("help", _files(docs[:2]), embedder_for)
    assert [i.name for i in other.list()] == []
    for call in (lambda: other.get("help"), lambda: other.remove("help"), lambda: other.text("help", "refunds.md")):
        with pytest.raises(NotFound):
            call()
    ids = [int(i) for i in acme.chunk_rows("help")[0]]
    assert other.passages(ids) == {} and len(acme.passages(ids)) == len(ids)


def test_a_new_embedding_model_version_reembeds(kbs: KnowledgeBases, embedder_for, kb_runtime,
                                                docs: list[Path]) -> None:  # type: ignore[no-untyped-def]
    registry = kb_runtime.store.registry
    base = registry.get(EMBED).manifest
    registry.add("my-embed", base, tenant="acme")
    kbs.create("help", embedder_for("my-embed"))
    kbs.add("help", _files(docs), embedder_for)
    first = kbs.get("help").embed_digest
    # the tenant's "my-embed" now names another manifest, as a fine-tune promoted to latest would
    registry.add("my-embed", base.model_copy(update={"license": "another version"}), tenant="acme", replace=True)
    found = search(kbs, "help", "lost card", embedder_for("my-embed"), k=1)
    assert kbs.get("help").embed_digest not in (None, first) and found.data[0].document == "cards.html"
    assert [v.operation for v in kbs.show("help").versions] == ["create", "add", "reembed"]


def test_missing_index_files_are_rebuilt(kbs: KnowledgeBases, embedder_for, docs: list[Path]) -> None:  # type: ignore[no-untyped-def]
    from llmos.kb import retrieval

    kbs.create("help", embedder_for(EMBED))
    kbs.add("help", _files(docs), embedder_for)
    first = search(kbs, "help", "PIN change", embedder_for(EMBED), k=2)
    folder = kbs.index_folder(kbs.get("help"))
    assert (folder / "vectors.faiss").is_file()
    for f in folder.glob("*"):
        if f.is_file():
            os.remove(f)
    retrieval._CACHE.drop(folder.parent)
    again = search(kbs, "help", "PIN change", embedder_for(EMBED), k=2)
    assert [p.chunk_id for p in again.data] == [p.chunk_id for p in first.data]
    assert (folder / "vectors.faiss").is_file()


def test_a_model_that_cannot_embed_is_named(kb_runtime, builtin_runtime, kernel: Kernel) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import copy_builtin

    copy_builtin(kb_runtime, builtin_runtime, "smollm2-135m-instruct")
    with pytest.raises(WrongTask, match="minilm-l6"):
        KernelEmbedder.of(kernel, "smollm2-135m-instruct", "acme")
