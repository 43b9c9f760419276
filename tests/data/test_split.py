"""Splits: stratified proportions, determinism with a seed, fallbacks and too-small datasets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from llmos.data import ClassifyRow, Datasets, SplitOptions, TagRow, split_rows, validated
from llmos.data.mapping import map_table
from llmos.data.readers import read_table
from llmos.errors import InvalidInput


@pytest.fixture(scope="module")
def banking(datasets: Path) -> list[ClassifyRow]:
    return map_table(read_table(datasets / "banking77" / "train.csv"), "banking").rows  # type: ignore[return-value]


def test_stratified_proportions_per_class(banking: list[ClassifyRow]) -> None:
    out, report = split_rows(banking, SplitOptions(validation=0.1, test=0.2, seed=3))
    assert report.stratified and not report.warnings
    assert report.counts == {"train": 7_002, "validation": 1_000, "test": 2_001}  # 10,003 rows
    total = Counter(r.label for r in banking)
    for split, share in (("train", 0.7), ("validation", 0.1), ("test", 0.2)):
        per_class = Counter(r.label for r in out if r.split == split)
        for label, count in total.items():
            assert abs(per_class[label] - share * count) <= 2, (split, label)
    assert [r.text for r in out] == [r.text for r in banking]  # order kept, only `split` added


def test_same_seed_same_split_other_seed_other_split(banking: list[ClassifyRow]) -> None:
    a = [r.split for r in split_rows(banking, SplitOptions(seed=11))[0]]
    b = [r.split for r in split_rows(banking, SplitOptions(seed=11))[0]]
    c = [r.split for r in split_rows(banking, SplitOptions(seed=12))[0]]
    assert a == b and a != c


def test_tiny_class_falls_back_to_unstratified_with_a_warning() -> None:
    rows = [ClassifyRow(text=f"t{i}", label="big") for i in range(40)] + [ClassifyRow(text="x", label="rare")]
    out, report = split_rows(rows, SplitOptions(seed=0))
    assert not report.stratified
    assert report.warnings and "not stratified" in report.warnings[0] and "'rare' (1)" in report.warnings[0]
    assert sum(report.counts.values()) == 41 and all(report.counts.values())


def test_tag_and_sft_rows_split_without_labels() -> None:
    rows = [TagRow(tokens=[f"w{i}"], tags=["O"]) for i in range(50)]
    out, report = split_rows(rows, SplitOptions(validation=0.2, test=0.0))
    assert report.counts == {"train": 40, "validation": 10, "test": 0} and not report.stratified


@pytest.mark.parametrize(("n", "opts", "message"), [
    (1, SplitOptions(), r"1 row\(s\): too few to split \(train 0, validation 0, test 1\)"),
    (2, SplitOptions(), r"2 row\(s\): too few to split \(train 1, validation 0, test 1\)"),
    (3, SplitOptions(validation=0.0, test=0.5), None),
])
def test_too_small_to_split(n: int, opts: SplitOptions, message: str | None) -> None:
    rows = [ClassifyRow(text=f"t{i}", label=str(i % 2)) for i in range(n)]
    if message is None:
        out, report = split_rows(rows, opts)
        assert report.counts == {"train": 1, "validation": 0, "test": 2}
        return
    with pytest.raises(InvalidInput, match=message):
        split_rows(rows, opts)


def test_bad_fractions_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="must leave rows for training"):
        validated(SplitOptions, validation=0.5, test=0.5)
    with pytest.raises(InvalidInput, match=r"test: Input should be less than 1"):
        validated(SplitOptions, test=1.5)


def test_split_version_rows_by_split(reg: Datasets, head) -> None:  # type: ignore[no-untyped-def]
    reg.import_file(head("sms_spam/SMSSpamCollection", 600), "spam")
    info = reg.split("spam", SplitOptions(seed=5))
    assert info.counts.splits == {"train": 480, "validation": 60, "test": 60}
    assert info.derivation and info.derivation.report["stratified"] is True
    valid = list(reg.rows("spam", split="validation"))
    assert len(valid) == 60 and {r.split for r in valid} == {"validation"}
    assert reg.split("spam", SplitOptions(seed=5), version=1).digest == info.digest  # deterministic content
    with pytest.raises(InvalidInput, match=r"spam@1 has no 'test' split \(splits: none"):
        list(reg.rows("spam", version=1, split="test"))


def test_split_too_small_registers_nothing(reg: Datasets, write) -> None:  # type: ignore[no-untyped-def]
    reg.import_file(write("two.csv", "text,label\na,x\nb,y\n"), "two")
    with pytest.raises(InvalidInput, match="too few to split"):
        reg.split("two")
    assert [i.ref for i in reg.list(all_versions=True)] == ["two@1"]
