"""Cleaning: Unicode normalisation, whitespace, empty rows, exact and near duplicates, with a report.

Duplicates are judged on a row's *input* (text, tokens, prompt), not its target: two copies of one
input would leak between train and test splits whatever their labels, and copies with different
labels are contradictions a model cannot learn. The first occurrence is kept; the report counts how
many removed copies disagreed with the kept label (``label_conflicts``).

Text fields of classify and tag rows have all whitespace collapsed to single spaces. SFT fields keep
their inner newlines and indentation (outputs are often code); only their ends are stripped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from llmos.data.rows import ChatMessage, ClassifyRow, Row, SftRow, TagRow, input_text, target_of

_SPACES = re.compile(r"\s+")
_LINE_ENDS = re.compile(r"\r\n?")


class CleanOptions(BaseModel):
    normalize: Literal["NFC", "NFKC", "none"] = "NFC"
    collapse_whitespace: bool = True
    drop_empty: bool = True
    exact_duplicates: bool = True
    near_duplicates: bool = True
    near_threshold: float = Field(default=0.8, ge=0.5, le=1.0, description="Jaccard of character 5-grams")
    seed: int = 0


class NearDuplicate(BaseModel):
    removed: str
    kept: str


class CleanReport(BaseModel):
    rows_in: int
    rows_out: int
    changed: int = 0  # rows whose text normalisation or whitespace changed
    empty: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    label_conflicts: int = 0  # removed duplicates whose target differed from the kept row's
    examples: list[NearDuplicate] = Field(default_factory=list)  # a few near duplicates, to judge the threshold


def clean_rows(rows: Sequence[Row], opts: CleanOptions | None = None) -> tuple[list[Row], CleanReport]:
    opts = opts or CleanOptions()
    report = CleanReport(rows_in=len(rows), rows_out=0)
    normal = [normalize_row(r, opts) for r in rows]
    report.changed = sum(a is not b for a, b in zip(rows, normal))
    kept = [r for r in normal if not (opts.drop_empty and is_empty(r))]
    report.empty = len(normal) - len(kept)
    if opts.exact_duplicates:
        kept = _drop_exact(kept, report)
    if opts.near_duplicates:
        kept = _drop_near(kept, opts, report)
    report.rows_out = len(kept)
    return kept, report


# -- normalisation -------------------------------------------------------------------------------
def _text_fn(opts: CleanOptions, *, keep_lines: bool) -> Callable[[str], str]:
    form = None if opts.normalize == "none" else opts.normalize

    def fix(text: str) -> str:
        out = unicodedata.normalize(form, text) if form else text
        if opts.collapse_whitespace:
            out = _LINE_ENDS.sub("\n", out).strip() if keep_lines else _SPACES.sub(" ", out).strip()
        return out

    return fix


def normalize_row(row: Row, opts: CleanOptions) -> Row:
    """The row with its text normalised; the very same object when nothing changed."""
    if isinstance(row, ClassifyRow):
        fix = _text_fn(opts, keep_lines=False)
        text = fix(row.text)
        return row if text == row.text else row.model_copy(update={"text": text})
    if isinstance(row, TagRow):
        return _normalize_tags(row, _text_fn(opts, keep_lines=False))
    return _normalize_sft(row, _text_fn(opts, keep_lines=True))


def _normalize_tags(row: TagRow, fix: Callable[[str], str]) -> TagRow:
    # a token that normalises to nothing goes with its tag, so tokens and tags stay aligned
    pairs = [(fix(tok), tag) for tok, tag in zip(row.tokens, row.tags)]
    pairs = [(tok, tag) for tok, tag in pairs if tok]
    tokens, tags = [p[0] for p in pairs], [p[1] for p in pairs]
    return row if tokens == row.tokens and tags == row.tags else row.model_copy(update={"tokens": tokens, "tags": tags})


def _normalize_sft(row: SftRow, fix: Callable[[str], str]) -> SftRow:
    if row.messages:
        messages = [ChatMessage(role=m.role, content=fix(m.content)) for m in row.messages]
        return row if messages == row.messages else row.model_copy(update={"messages": messages})
    update = {f: fix(getattr(row, f)) for f in ("instruction", "input", "output")}
    return row if all(update[f] == getattr(row, f) for f in update) else row.model_copy(update=update)


def is_empty(row: Row) -> bool:
    if isinstance(row, ClassifyRow):
        return not row.text.strip()
    if isinstance(row, TagRow):
        return not row.tokens
    if row.messages:
        return not row.messages[-1].content.strip() or not any(m.content.strip() for m in row.messages[:-1])
    return not row.instruction.strip() or not row.output.strip()


# -- duplicates ----------------------------------------------------------------------------------
def _drop_exact(rows: list[Row], report: CleanReport) -> list[Row]:
    first: dict[str, Row] = {}
    kept: list[Row] = []
    for row in rows:
        key = input_text(row)
        seen = first.get(key)
        if seen is None:
            first[key] = row
            kept.append(row)
            continue
        report.exact_duplicates += 1
        report.label_conflicts += target_of(seen) != target_of(row)
    return kept


def _drop_near(rows: list[Row], opts: CleanOptions, report: CleanReport) -> list[Row]:
    from llmos.data.neardup import near_duplicates  # numpy: loaded only when cleaning, not for every CLI start

    matches = near_duplicates([input_text(r) for r in rows], opts.near_threshold, opts.seed)
    kept: list[Row] = []
    for row, match in zip(rows, matches):
        if match is None:
            kept.append(row)
            continue
        report.near_duplicates += 1
        report.label_conflicts += target_of(rows[match]) != target_of(row)
        if len(report.examples) < 5:
            report.examples.append(NearDuplicate(removed=input_text(row)[:200], kept=input_text(rows[match])[:200]))
    return kept
