"""Augmentation: seeded EDA copies, tag alignment kept, SFT outputs untouched, only training rows varied."""

from __future__ import annotations

from collections import Counter

import pytest

from llmos.data import AugmentOptions, ClassifyRow, Datasets, SftRow, SplitOptions, TagRow, augment_rows, validated
from llmos.errors import InvalidInput

TEXT = "the film is a charming and often affecting journey through memory"


def _entities(row: TagRow) -> list[tuple[str, str]]:
    return [(tok, tag) for tok, tag in zip(row.tokens, row.tags) if tag != "O"]


def _spans_valid(tags: list[str]) -> bool:
    """IOB2: an I-X follows B-X or I-X."""
    return all(not t.startswith("I-") or (i and tags[i - 1][2:] == t[2:] and tags[i - 1] != "O")
               for i, t in enumerate(tags))


def test_classify_copies_use_the_rows_own_words_and_are_seeded() -> None:
    rows = [ClassifyRow(text=TEXT, label="1"), ClassifyRow(text="dull", label="0")]
    out, report = augment_rows(rows, AugmentOptions(copies=3, seed=4))
    again, _ = augment_rows(rows, AugmentOptions(copies=3, seed=4))
    other, _ = augment_rows(rows, AugmentOptions(copies=3, seed=5))
    assert out == again and out != other
    assert out[0] == rows[0] and report.rows_in == 2 and report.added == len(out) - 2
    words = set(TEXT.split())
    copies = [r for r in out if r.label == "1" and r is not out[0]]
    assert len(copies) == 3 and out[4] == rows[1]  # copies follow their source row
    for row in copies:
        assert set(row.text.split()) <= words and row.text != TEXT
    assert sum(report.ops.values()) == report.added
    assert report.skipped >= 2  # a one-word text cannot be swapped or shortened


@pytest.mark.parametrize("op", ["swap", "delete", "insert"])
def test_each_operation(op: str) -> None:
    (_, new), _ = augment_rows([ClassifyRow(text=TEXT, label="1")], AugmentOptions(ops=[op], rate=0.2))
    before, after = Counter(TEXT.split()), Counter(new.text.split())
    n = round(0.2 * len(TEXT.split()))
    if op == "swap":
        assert after == before
    elif op == "delete":
        assert sum(after.values()) == sum(before.values()) - n and not after - before
    else:
        assert sum(after.values()) == sum(before.values()) + n and not before - after


def test_tag_rows_keep_tokens_and_tags_aligned(reg: Datasets, head) -> None:  # type: ignore[no-untyped-def]
    reg.import_file(head("conll2003/train.txt", 3_000), "ner")
    rows = list(reg.rows("ner"))
    out, report = augment_rows(rows, AugmentOptions(copies=3, rate=0.3, seed=1))
    assert report.added > len(rows)
    sources = {tuple(r.tokens): r for r in rows}
    new = [r for r in out if tuple(r.tokens) not in sources]
    assert len(new) >= report.added - 5  # a few copies may coincide with another sentence
    by_entities = Counter(tuple(_entities(r)) for r in rows)
    for row in new:
        assert len(row.tokens) == len(row.tags)
        assert _spans_valid(row.tags)
        assert by_entities[tuple(_entities(row))] > 0  # every entity token kept, in order, with its tag


def test_tag_insertion_never_cuts_a_span() -> None:
    row = TagRow(tokens=["New", "York", "City", "is", "big", "."], tags=["B-LOC", "I-LOC", "I-LOC", "O", "O", "O"])
    out, _ = augment_rows([row], AugmentOptions(copies=20, ops=["insert"], rate=0.5, seed=2))
    for r in out[1:]:
        start = r.tokens.index("New")
        assert r.tokens[start:start + 3] == ["New", "York", "City"]
        assert r.tags[start:start + 3] == ["B-LOC", "I-LOC", "I-LOC"]


def test_tag_dataset_without_outside_tags_is_refused() -> None:
    rows = [TagRow(tokens=["the", "cat"], tags=["DT", "NN"])]
    with pytest.raises(InvalidInput, match="no 'O' tags; augmentation only moves tokens outside entities"):
        augment_rows(rows)


def test_sft_needs_fields_and_keeps_outputs() -> None:
    rows = [SftRow(instruction="Sort the list in place please", input="a b c d e f g h", output="sorted")]
    with pytest.raises(InvalidInput, match="needs the fields to vary"):
        augment_rows(rows)
    out, report = augment_rows(rows, AugmentOptions(copies=2, fields=["input"], seed=1))
    assert report.added == 2
    for r in out[1:]:
        assert r.output == "sorted" and r.instruction == rows[0].instruction and r.input != rows[0].input


def test_only_training_rows_are_augmented(reg: Datasets, head) -> None:  # type: ignore[no-untyped-def]
    reg.import_file(head("sms_spam/SMSSpamCollection", 300), "spam")
    split = reg.split("spam", SplitOptions(seed=1))
    info = reg.augment("spam", AugmentOptions(copies=2, seed=1))
    assert info.parent == split.ref and info.derivation and info.derivation.operation == "augment"
    assert info.counts.splits["validation"] == split.counts.splits["validation"]
    assert info.counts.splits["test"] == split.counts.splits["test"]
    assert info.counts.splits["train"] == split.counts.splits["train"] + info.derivation.report["added"]
    assert info.derivation.report["augmented_from"] == split.counts.splits["train"]
    resplit = reg.split("spam")
    assert any("holds augmented copies" in w for w in resplit.warnings)


def test_bad_options_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match=r"copies: Input should be less than or equal to 20"):
        validated(AugmentOptions, copies=100)
    with pytest.raises(InvalidInput, match=r"ops.0: Input should be 'swap', 'delete' or 'insert'"):
        validated(AugmentOptions, ops=["synonym"])
