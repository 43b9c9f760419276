"""Cleaning: normalisation, empty rows, exact and near duplicates, counted exactly on planted data."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from llmos.data import ClassifyRow, CleanOptions, Datasets, SftRow, TagRow, clean_rows
from llmos.data.mapping import map_table
from llmos.data.neardup import comparison_form, jaccard, near_duplicates, shingles
from llmos.data.readers import read_table
from llmos.errors import InvalidInput
from tests.waiting import BACKSTOP_S


@pytest.fixture
def sst2_slice(head) -> list[ClassifyRow]:  # type: ignore[no-untyped-def]
    """3,000 real SST-2 rows, already cleaned, so every planted duplicate is the only one of its kind."""
    rows = map_table(read_table(head("sst2/train.tsv", 3_001)), "sst2").rows
    kept, _ = clean_rows(rows)
    return kept  # type: ignore[return-value]


def test_planted_duplicates_are_counted_exactly(sst2_slice: list[ClassifyRow]) -> None:
    rng = random.Random(7)
    base = sst2_slice
    long_rows = [r for r in base if len(r.text.split()) >= 12]
    exact = rng.sample(base, 30)
    spaced = [r.model_copy(update={"text": "  " + r.text.replace(" ", "   ") + "\t"}) for r in rng.sample(base, 10)]
    conflicts = [r.model_copy(update={"label": "1" if r.label == "0" else "0"}) for r in rng.sample(base, 3)]
    near = [r.model_copy(update={"text": r.text.upper() + " indeed !"}) for r in rng.sample(long_rows, 8)]
    empty = [ClassifyRow(text=t, label="0") for t in ("", " ", "\t", "\n\n", "\u3000")]
    planted = base + exact + spaced + conflicts + near + empty
    rng.shuffle(planted[len(base):])  # the plants come after their originals, in any order

    kept, report = clean_rows(planted)
    assert report.rows_in == len(base) + 56
    assert (report.empty, report.exact_duplicates, report.near_duplicates) == (5, 43, 8)
    assert report.label_conflicts == 3
    assert report.rows_out == len(kept) == len(base)
    assert [r.text for r in kept] == [r.text for r in base]  # the first occurrence is the one kept
    assert report.examples and report.examples[0].removed.endswith("indeed !")


def test_near_duplicate_detection() -> None:
    texts = ["The quick brown fox jumps over the lazy dog near the river bank.",
             "the quick brown fox jumps over the lazy dog near the river bank",  # case + punctuation
             "The quick brown fox jumps over the lazy dog near the river banks!",  # one letter more
             "A completely different sentence about the weather in spring.",
             "The quick brown cat sleeps under the warm sun all afternoon long.",  # shares words, not near
             ""]
    assert near_duplicates(texts, threshold=0.8) == [None, 0, 0, None, None, None]
    assert near_duplicates(texts, threshold=1.0) == [None, 0, None, None, None, None]


def test_near_duplicates_do_not_chain() -> None:
    a = "one two three four five six seven eight nine ten"
    b = a + " eleven twelve"
    c = b + " thirteen fourteen"
    ja, jc = shingles(comparison_form(a)), shingles(comparison_form(c))
    threshold = (jaccard(shingles(comparison_form(b)), jc) + jaccard(ja, jc)) / 2  # b~a, c~b, but c !~ a
    result = near_duplicates([a, b, c], threshold=threshold)
    assert result[1] == 0 and result[2] is None  # c is compared only with kept rows


def test_normalisation_forms_and_whitespace() -> None:
    rows = [ClassifyRow(text="cafe\u0301  au\tlait ", label="a"), ClassifyRow(text="\ufb01sh", label="b")]
    nfc, _ = clean_rows(rows, CleanOptions(near_duplicates=False))
    assert [r.text for r in nfc] == ["café au lait", "\ufb01sh"]
    nfkc, report = clean_rows(rows, CleanOptions(normalize="NFKC", near_duplicates=False))
    assert [r.text for r in nfkc] == ["café au lait", "fish"] and report.changed == 2
    raw, report = clean_rows(rows, CleanOptions(normalize="none", collapse_whitespace=False, near_duplicates=False))
    assert raw == rows and report.changed == 0


def test_tag_rows_stay_aligned_and_sft_keeps_code_layout() -> None:
    tag = TagRow(tokens=["Paris", "\u200b ", "is"], tags=["B-LOC", "O", "O"])
    (out,), _ = clean_rows([tag])
    assert (out.tokens, out.tags) == (["Paris", "\u200b", "is"], ["B-LOC", "O", "O"])  # ZWSP is not whitespace
    blank = TagRow(tokens=["Paris", "  ", "is"], tags=["B-LOC", "O", "O"])
    (out,), _ = clean_rows([blank])
    assert (out.tokens, out.tags) == (["Paris", "is"], ["B-LOC", "O"])
    code = SftRow(instruction=" Write a loop ", output="for i in x:\r\n    print(i)\n")
    (out,), _ = clean_rows([code])
    assert (out.instruction, out.output) == ("Write a loop", "for i in x:\n    print(i)")


def test_clean_a_registered_dataset_records_the_report(reg: Datasets, head) -> None:  # type: ignore[no-untyped-def]
    reg.import_file(head("sms_spam/SMSSpamCollection", 1_000), "spam")
    info = reg.clean("spam")
    assert info.version == 2 and info.parent == "spam@1"
    assert info.derivation and info.derivation.operation == "clean"
    report = info.derivation.report
    assert report["rows_in"] == 1_000 and report["rows_out"] == info.counts.rows
    removed = report["empty"] + report["exact_duplicates"] + report["near_duplicates"]
    assert report["rows_in"] - report["rows_out"] == removed
    assert report["exact_duplicates"] > 0  # the SMS corpus repeats messages
    assert info.derivation.params["near_threshold"] == 0.8


def test_clean_that_would_remove_everything_registers_nothing(reg: Datasets, write) -> None:  # type: ignore[no-untyped-def]
    reg.import_file(write("e.csv", "text,label\n ,a\n\t,b\n"), "blank")
    with pytest.raises(InvalidInput, match="would remove every row"):
        reg.clean("blank")
    assert [i.ref for i in reg.list(all_versions=True)] == ["blank@1"]


@pytest.mark.timeout(BACKSTOP_S)  # a hang guard, not a speed claim
def test_full_sst2_near_dup_pass(datasets: Path) -> None:
    """All 67k SST-2 phrases go through the near-duplicate pass (its speed is a benchmark, not a test)."""
    lines = (datasets / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    texts = [line.split("\t")[0] for line in lines]
    result = near_duplicates(texts, threshold=0.8)
    removed = [i for i, m in enumerate(result) if m is not None]
    assert len(texts) == 67_349 and 10_000 < len(removed) < 40_000  # SST-2 holds many overlapping phrases
    assert all(result[i] < i and result[result[i]] is None for i in removed)  # an earlier, kept row
