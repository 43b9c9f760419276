"""Every bad input gives a clear error naming the problem, and leaves nothing registered or stored."""

from __future__ import annotations

import os

import pytest

from llmos.data import Datasets, ImportOptions
from llmos.errors import ImportFailed, InvalidInput, InvalidName
from llmos.runtime import Runtime
from tests.data.conftest import assert_nothing_stored
from tests.waiting import BACKSTOP_S

CASES = [
    ("no known columns", "x.csv", "foo,bar\n1,2\n3,4\n", None,
     r"cannot tell the task from the columns found \(foo, bar\)"),
    ("missing text column", "x.csv", "foo,label\n1,2\n3,4\n", None,
     r"no text column for task classify; columns found: foo, label. Give a mapping, e.g. text=<column>"),
    ("unknown mapped column", "x.csv", "text,label\na,b\nc,d\n", {"text": "txt"},
     r"no column 'txt'; columns found: text, label"),
    ("mixed label types", "x.jsonl",
     '{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n{"text": "c", "label": "pos"}\n', None,
     r"mixed label types in column 'label': numbers \(e.g. '1' on line 1\) and words \(e.g. 'pos' on line 3\)"),
    ("empty file", "x.csv", "", None, r"x.csv is empty"),
    ("blank file", "x.tsv", "\n\n   \n", None, r"x.tsv is empty"),
    ("header only", "x.csv", "text,label\n", None, r"no data rows"),
    ("single class", "x.csv", "text,label\na,pos\nb,pos\nc,pos\n", None,
     r"every row has the label 'pos'; a classifier needs at least two classes"),
    ("wrong encoding", "x.csv", "text,label\ncaf\xe9 au lait,a\n".encode("latin-1") + b"ok,b\n", None,
     r"line 2 is not valid utf-8 \(byte 0xe9 at column 4\).*--encoding latin-1"),
    ("utf-16", "x.csv", "text,label\na,b\n".encode("utf-16"), None, r"UTF-16 text; convert it to UTF-8"),
    ("binary junk", "x.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(256), None,
     r"looks like a binary file"),
    ("binary junk, unknown extension", "blob", bytes(range(256)) * 4, None, r"looks like a binary file"),
    ("malformed json line", "x.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"text": "c", "lab\n',
     None, r"line 3 is not valid JSON \(Invalid control character at column 19\)"),
    ("json not a list", "x.json", '{"text": "a", "label": "b"}', None,
     r"expected a JSON list of objects, found a dict"),
    ("json item not an object", "x.json", '[{"text": "a", "label": "b"}, 5]', None, r"item 2 is a JSON int"),
    ("invalid json document", "x.json", '[{"text": "a",\n "label": }]', None, r"invalid JSON at line 2 column 11"),
    ("wrong field count", "x.csv", "text,label\na,b\nc,d\ne,f,g\n", None,
     r"line 4 has 3 field\(s\) but the file has 2 column\(s\) \(text, label\)"),
    ("unterminated quote", "x.csv", 'text,label\na,b\n"c,d\ne,f\n', None, r"line \d+: malformed CSV"),
    ("ragged conll", "x.conll", "EU B-ORG\nrejects O\n\nGerman JJ B-MISC\n", None,
     r"line 4 has 3 column\(s\), expected 2"),
    ("tags misaligned", "x.jsonl",
     '{"tokens": ["a", "b"], "tags": ["O", "O"]}\n{"tokens": ["a", "b", "c"], "tags": ["O", "O"]}\n', None,
     r"line 2: 3 tokens but 2 tags"),
    ("label column is text", "x.tsv", "".join(f"ham\tmessage number {i}\n" for i in range(60)) + "spam\tx\n",
     {"label": 1, "text": 0}, r"column '1' has 61 distinct values in 61 rows, so it looks like text"),
    ("empty label", "x.csv", "text,label\na,b\nc,\n", None, r"line 3: the label is empty"),
    ("float label", "x.jsonl", '{"text": "a", "label": 0.5}\n', None, r"label 0.5 is not a class name"),
    ("message roles", "x.jsonl", '{"messages": [{"role": "wizard", "content": "hi"}]}\n', None,
     r"unknown message role 'wizard'"),
    ("chat without answer", "x.jsonl", '{"messages": [{"role": "user", "content": "hi"}]}\n', None,
     r"line 1: .*last message must be the assistant"),
    ("unknown format", "x.dat", "just some words\nand more\n", None, r"cannot tell the format of x.dat"),
]


@pytest.mark.parametrize(("what", "filename", "content", "mapping", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_file_is_a_clear_error_and_stores_nothing(reg: Datasets, runtime: Runtime, write, what: str,  # type: ignore[no-untyped-def]
                                                     filename: str, content: str | bytes,
                                                     mapping: dict[str, str | int] | None, message: str) -> None:
    path = write(filename, content)
    with pytest.raises(ImportFailed, match=message):
        reg.import_file(path, "bad", ImportOptions(mapping=mapping))
    assert_nothing_stored(reg, runtime)


@pytest.mark.timeout(BACKSTOP_S)  # a hang guard: reading the line whole would take very long
def test_enormous_line_fails_fast(reg: Datasets, runtime: Runtime, write) -> None:  # type: ignore[no-untyped-def]
    path = write("huge.jsonl", '{"text": "' + "a" * (3 << 20))  # 3 MiB, no newline
    with pytest.raises(ImportFailed, match=r"huge.jsonl: line 1 is longer than 1,048,576 bytes"):
        reg.import_file(path, "huge")
    assert_nothing_stored(reg, runtime)


def test_enormous_quoted_csv_field_fails(reg: Datasets, runtime: Runtime, write) -> None:  # type: ignore[no-untyped-def]
    # an open quote swallowing many short lines: the field cap stops it, with a line number
    path = write("q.csv", 'text,label\n"' + "word\n" * 300_000 + ",a\n")
    with pytest.raises(ImportFailed, match=r"q.csv: line \d+: malformed CSV \(field larger than field limit"):
        reg.import_file(path, "q")
    assert_nothing_stored(reg, runtime)


def test_wrong_encoding_can_be_named(reg: Datasets, write) -> None:  # type: ignore[no-untyped-def]
    path = write("latin.csv", "text,label\ncafé au lait,a\nthé,b\n".encode("latin-1"))
    info = reg.import_file(path, "latin", ImportOptions(encoding="latin-1"))
    assert [r.text for r in reg.rows(info.ref)] == ["café au lait", "thé"]


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"name": "../etc"}, InvalidName, r"invalid dataset name '../etc'"),
    ({"name": "x", "opts": ImportOptions(encoding="no-such-codec")}, InvalidInput, r"unknown encoding"),
    ({"name": "x", "opts": ImportOptions(encoding="utf-16")}, InvalidInput, r"not supported; convert the file"),
    ({"name": "x", "opts": ImportOptions(mapping={"txt": "text"}, task="classify")}, InvalidInput,
     r"unknown field\(s\) txt for task classify; its fields are text, label"),
])
def test_bad_arguments(reg: Datasets, runtime: Runtime, write, kwargs, error, message) -> None:  # type: ignore[no-untyped-def]
    path = write("ok.csv", "text,label\na,x\nb,y\n")
    with pytest.raises(error, match=message):
        reg.import_file(path, **kwargs)
    assert_nothing_stored(reg, runtime)


def test_unknown_task_string_is_invalid_input() -> None:
    from llmos.data import validated

    with pytest.raises(InvalidInput, match=r"task: Input should be 'classify', 'tag' or 'sft'"):
        validated(ImportOptions, task="regress")


def test_failed_registration_removes_its_blob(reg: Datasets, runtime: Runtime, write, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = write("ok.csv", "text,label\na,x\nb,y\n")

    def boom(*args: object, **kwargs: object) -> int:
        raise RuntimeError("database went away")

    monkeypatch.setattr(reg, "_insert", boom)
    with pytest.raises(RuntimeError):
        reg.import_file(path, "ok")
    assert_nothing_stored(reg, runtime)


def test_json_mapping_listed_in_error_for_headerless(reg: Datasets, runtime: Runtime, write) -> None:  # type: ignore[no-untyped-def]
    path = write("three.tsv", "a\tb\tc\nd\te\tf\n")
    with pytest.raises(ImportFailed, match=r"columns found: 3 unnamed \(no header\), by position 0..2"):
        reg.import_file(path, "three", ImportOptions(header=False))
    assert_nothing_stored(reg, runtime)


def test_wrong_encoding_in_a_json_document_names_the_line(reg: Datasets, runtime: Runtime, write) -> None:  # type: ignore[no-untyped-def]
    path = write("x.json", '[\n {"text": "ok", "label": "a"},\n {"text": "caf\xe9", "label": "b"}\n]'.encode("latin-1"))
    with pytest.raises(ImportFailed, match=r"x.json: line 3 is not valid utf-8 \(byte 0xe9 at column 15\)"):
        reg.import_file(path, "x")
    assert_nothing_stored(reg, runtime)
