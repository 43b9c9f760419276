"""Importing the real datasets in every supported format, with inferred and explicit mappings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos.data import ClassifyRow, Datasets, ImportOptions, SftRow, TagRow, Task
from llmos.data.readers import Format, looks_like_header
from llmos.runtime import Runtime


def test_sst2_tsv_full_file(reg: Datasets, datasets: Path) -> None:
    info = reg.import_file(datasets / "sst2" / "train.tsv", "sst2")
    assert (info.name, info.version, info.task) == ("sst2", 1, Task.classify)
    assert info.counts.rows == 67_349
    assert info.labels == ["0", "1"] and sum(info.counts.labels.values()) == 67_349
    assert info.source.mapping == {"text": "sentence", "label": "label"}
    assert info.source.format == "tsv" and info.source.header is True
    first = next(reg.rows("sst2"))
    assert first == ClassifyRow(text="hide new secretions from the parental units ", label="0")


def test_conll_sentences_tokens_and_tags(reg: Datasets, datasets: Path) -> None:
    info = reg.import_file(datasets / "conll2003" / "valid.txt", "conll")
    assert info.task is Task.tag and info.counts.rows == 3_250  # -DOCSTART- lines are not sentences
    assert info.source.mapping == {"tokens": "0", "tags": "3"}
    assert set(info.labels) == {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"}
    rows = list(reg.rows("conll"))
    assert all(isinstance(r, TagRow) and len(r.tokens) == len(r.tags) for r in rows)
    assert rows[1].tokens == ["LONDON", "1996-08-30"] and rows[1].tags == ["B-LOC", "O"]


def test_conll_train_slice_and_explicit_column(reg: Datasets, head) -> None:  # type: ignore[no-untyped-def]
    path = head("conll2003/train.txt", 400)
    info = reg.import_file(path, "pos", ImportOptions(mapping={"tags": 1}))  # the POS column instead of NER
    rows = list(reg.rows("pos"))
    assert info.source.mapping == {"tokens": "0", "tags": "1"}
    assert rows[0].tokens[:3] == ["EU", "rejects", "German"] and rows[0].tags[:3] == ["NNP", "VBZ", "JJ"]


def test_banking77_quoted_csv(reg: Datasets, datasets: Path) -> None:
    info = reg.import_file(datasets / "banking77" / "train.csv", "banking")
    assert info.counts.rows == 10_003 and len(info.labels) == 77
    assert info.source.mapping == {"text": "text", "label": "category"}
    categories = json.loads((datasets / "banking77" / "categories.json").read_text())
    assert set(info.labels) == set(categories)


def test_sms_spam_headerless_positional_inference(reg: Datasets, datasets: Path) -> None:
    info = reg.import_file(datasets / "sms_spam" / "SMSSpamCollection", "spam")
    assert info.source.format == "tsv" and info.source.header is False
    assert info.source.mapping == {"label": "0", "text": "1"}
    assert info.labels == ["ham", "spam"] and info.counts.rows == 5_574
    assert next(reg.rows("spam")).text.startswith("Go until jurong point")


def test_sms_spam_explicit_positional_mapping(reg: Datasets, head) -> None:  # type: ignore[no-untyped-def]
    path = head("sms_spam/SMSSpamCollection", 200)
    opts = ImportOptions(task=Task.classify, mapping={"text": 1, "label": "0"}, format=Format.tsv, header=False)
    info = reg.import_file(path, "spam")
    explicit = reg.import_file(path, "spam", opts)
    assert explicit.version == 2 and explicit.digest == info.digest  # same rows, same blob


def test_code_alpaca_json_list(reg: Datasets, datasets: Path) -> None:
    info = reg.import_file(datasets / "code_alpaca_2k" / "code_alpaca_2k.json", "alpaca")
    assert info.task is Task.sft and info.counts.rows == 2_017 and info.labels == []
    assert info.source.mapping == {"instruction": "instruction", "input": "input", "output": "output"}
    row = next(reg.rows("alpaca"))
    assert isinstance(row, SftRow) and row.input == "dataList = [3, 9, 3, 5, 7, 9, 5]"
    assert [m.role for m in row.to_messages()] == ["user", "assistant"]


def test_nq_open_jsonl_answer_lists(reg: Datasets, datasets: Path) -> None:
    info = reg.import_file(datasets / "nq_open" / "NQ-open.dev.jsonl", "nq")
    assert info.task is Task.sft and info.counts.rows == 3_610
    assert info.source.mapping == {"instruction": "question", "output": "answer"}
    assert any("several answers" in w for w in info.warnings)
    row = next(reg.rows("nq"))
    assert (row.instruction, row.output) == ("when was the last time anyone was on the moon", "14 December 1972 UTC")


def test_explicit_mapping_for_unknown_column_names(reg: Datasets, write) -> None:  # type: ignore[no-untyped-def]
    path = write("odd.csv", "utterance_x,y_class,other\nhello there,a,1\nbye now,b,2\n")
    info = reg.import_file(path, "odd", ImportOptions(mapping={"text": "utterance_x", "label": "Y_CLASS"}))
    assert info.source.mapping == {"text": "utterance_x", "label": "y_class"}
    assert [r.label for r in reg.rows("odd")] == ["a", "b"]


def test_chat_messages_jsonl_and_sharegpt_roles(reg: Datasets, write) -> None:  # type: ignore[no-untyped-def]
    lines = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
             {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]}]
    reg.import_file(write("a.jsonl", json.dumps(lines[0]) + "\n"), "chat")
    reg.import_file(write("b.jsonl", json.dumps(lines[1]) + "\n"), "chat2")
    assert next(reg.rows("chat")).messages[1].content == "hello"
    assert [m.role for m in next(reg.rows("chat2")).messages] == ["user", "assistant"]


def test_jsonl_tag_rows_and_integer_labels(reg: Datasets, write) -> None:  # type: ignore[no-untyped-def]
    tag = write("t.jsonl", '{"tokens": ["Paris", "is", "big"], "ner_tags": ["B-LOC", "O", "O"]}\n')
    assert reg.import_file(tag, "tags").task is Task.tag
    cls = write("c.jsonl", '{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n')
    assert reg.import_file(cls, "ints").labels == ["0", "1"]


def test_preview_registers_nothing(reg: Datasets, runtime: Runtime, datasets: Path) -> None:
    preview = reg.preview_file(datasets / "banking77" / "train.csv", n=3)
    assert preview.rows == 10_003 and len(preview.preview) == 3
    assert preview.preview[0] == {"text": "I am still waiting on my card?", "label": "card_arrival"}
    assert reg.list() == [] and runtime.store.blobs.digests() == []


@pytest.mark.parametrize(("first", "rest", "expected"), [
    (["sentence", "label"], [["a film", "0"]], True),
    (["ham", "Go until jurong point, crazy.."], [["ham", "Ok lar..."]], False),
    (["review_body", "stars"], [["great", "5"]], True),
    (["0", "great film"], [["1", "bad"]], False),
])
def test_header_detection(first: list[str], rest: list[list[str]], expected: bool) -> None:
    assert looks_like_header(first, rest) is expected
