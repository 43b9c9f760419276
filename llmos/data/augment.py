"""EDA-style augmentation without synonyms: random swap, deletion and insertion of a row's own words.

(Wei & Zou, 2019, "EDA", minus synonym replacement, which needs a thesaurus per language.) Every
copy applies one operation chosen at random, to ``rate`` of the words (at least one). Only training
rows are augmented when the dataset is split: copies of validation or test rows would bias evaluation.

Tag rows move only tokens tagged ``O``: swaps exchange two O tokens, deletions drop O tokens, and
insertions copy an O token to a place that does not cut an entity span, so every tag still belongs
to its token. SFT rows are augmented only in the fields asked for; outputs never change.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

from llmos.data.rows import ClassifyRow, Row, SftRow, TagRow
from llmos.errors import InvalidInput

Op = Literal["swap", "delete", "insert"]
_INSIDE = ("I-", "E-", "L-")  # tags that continue a span: inserting before one would cut the span


class AugmentOptions(BaseModel):
    copies: int = Field(default=1, ge=1, le=20, description="new rows made from each row")
    ops: list[Op] = Field(default_factory=lambda: ["swap", "delete", "insert"], min_length=1)
    rate: float = Field(default=0.1, gt=0.0, le=0.5, description="share of a row's words each operation changes")
    seed: int = 0
    fields: list[Literal["instruction", "input"]] = Field(default_factory=list, description="SFT fields to vary")


class AugmentReport(BaseModel):
    rows_in: int
    augmented_from: int  # rows eligible (training rows, or all rows of an unsplit dataset)
    added: int
    skipped: int  # copies that came out equal to their row or to an earlier copy
    ops: dict[str, int] = Field(default_factory=dict)


def augment_rows(rows: Sequence[Row], opts: AugmentOptions | None = None) -> tuple[list[Row], AugmentReport]:
    """The rows followed by the new copies (each right after its source row)."""
    opts = opts or AugmentOptions()
    _check(rows, opts)
    rng = random.Random(opts.seed)
    split = any(r.split for r in rows)
    out: list[Row] = []
    ops: Counter[str] = Counter()
    eligible = skipped = 0
    for row in rows:
        out.append(row)
        if split and row.split != "train":
            continue
        eligible += 1
        seen = {_key(row)}
        for _ in range(opts.copies):
            op = rng.choice(opts.ops)
            new = _apply(row, op, opts, rng)
            if new is None or _key(new) in seen:
                skipped += 1
                continue
            seen.add(_key(new))
            out.append(new)
            ops[op] += 1
    added = len(out) - len(rows)
    return out, AugmentReport(rows_in=len(rows), augmented_from=eligible, added=added, skipped=skipped, ops=dict(ops))


def _check(rows: Sequence[Row], opts: AugmentOptions) -> None:
    if not rows:
        raise InvalidInput("the dataset has no rows to augment")
    first = rows[0]
    if isinstance(first, SftRow) and not opts.fields:
        raise InvalidInput("augmenting an sft dataset needs the fields to vary (instruction and/or input); "
                           "outputs are never changed")
    if isinstance(first, TagRow) and not any("O" in r.tags for r in rows):  # type: ignore[union-attr]
        raise InvalidInput("this tag dataset has no 'O' tags; augmentation only moves tokens outside entities "
                           "(IOB tagging), so it cannot vary these rows without breaking their tags")


def _key(row: Row) -> str:
    return row.model_dump_json()


def _apply(row: Row, op: str, opts: AugmentOptions, rng: random.Random) -> Row | None:
    if isinstance(row, ClassifyRow):
        text = vary_words(row.text, op, opts.rate, rng)
        return row.model_copy(update={"text": text}) if text is not None else None
    if isinstance(row, TagRow):
        return vary_tagged(row, op, opts.rate, rng)
    if row.messages:
        return None
    update = {f: vary_words(getattr(row, f), op, opts.rate, rng) for f in opts.fields if getattr(row, f)}
    update = {f: v for f, v in update.items() if v is not None}
    return row.model_copy(update=update) if update else None


# -- word operations -----------------------------------------------------------------------------
def vary_words(text: str, op: str, rate: float, rng: random.Random) -> str | None:
    """The text with one EDA operation applied, or None when the text is too short for it."""
    words = text.split()
    n = max(1, round(rate * len(words)))
    if op == "swap" and len(words) >= 2:
        for _ in range(n):
            i, j = rng.sample(range(len(words)), 2)
            words[i], words[j] = words[j], words[i]
    elif op == "delete" and len(words) >= 2:
        doomed = set(rng.sample(range(len(words)), min(n, len(words) - 1)))
        words = [w for k, w in enumerate(words) if k not in doomed]
    elif op == "insert" and words:
        for _ in range(n):
            words.insert(rng.randint(0, len(words)), rng.choice(words))
    else:
        return None
    return " ".join(words)


def vary_tagged(row: TagRow, op: str, rate: float, rng: random.Random) -> TagRow | None:
    tokens, tags = list(row.tokens), list(row.tags)
    outside = [k for k, t in enumerate(tags) if t == "O"]
    n = max(1, round(rate * len(tokens)))
    if op == "swap" and len(outside) >= 2:
        for _ in range(n):
            i, j = rng.sample(outside, 2)
            tokens[i], tokens[j] = tokens[j], tokens[i]
    elif op == "delete" and outside and len(tokens) >= 2:
        doomed = set(rng.sample(outside, min(n, len(outside), len(tokens) - 1)))
        tokens = [w for k, w in enumerate(tokens) if k not in doomed]
        tags = [t for k, t in enumerate(tags) if k not in doomed]
    elif op == "insert" and outside:
        for _ in range(n):
            places = [p for p in range(len(tokens) + 1) if p == len(tokens) or not tags[p].startswith(_INSIDE)]
            p, word = rng.choice(places), tokens[rng.choice([k for k, t in enumerate(tags) if t == "O"])]
            tokens.insert(p, word)
            tags.insert(p, "O")
    else:
        return None
    return row.model_copy(update={"tokens": tokens, "tags": tags})
