"""Train / validation / test splits: stratified by label where the classes allow it, seeded.

scikit-learn's ``train_test_split`` does the work (twice: hold-out off the whole, then validation vs
test within the hold-out). Stratifying needs at least two rows of every class in each cut; where a
class is too small the cut falls back to a plain shuffled split and the report says so, rather than
failing a dataset that is merely unbalanced. Rows keep their original order; each gains ``split``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, model_validator

from llmos.data.rows import SPLITS, ClassifyRow, Row
from llmos.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np


class SplitOptions(BaseModel):
    validation: float = Field(default=0.1, ge=0.0, lt=1.0)
    test: float = Field(default=0.1, ge=0.0, lt=1.0)
    seed: int = 0
    stratify: bool = True

    @model_validator(mode="after")
    def _room_for_train(self) -> "SplitOptions":
        if self.validation + self.test >= 1.0:
            raise ValueError(f"validation ({self.validation}) + test ({self.test}) must leave rows for training")
        return self


class SplitReport(BaseModel):
    counts: dict[str, int]
    stratified: bool
    warnings: list[str] = Field(default_factory=list)


def split_rows(rows: Sequence[Row], opts: SplitOptions | None = None) -> tuple[list[Row], SplitReport]:
    opts = opts or SplitOptions()
    _check_size(len(rows), opts)
    labels = [r.label for r in rows] if isinstance(rows[0], ClassifyRow) else None  # type: ignore[union-attr]
    warnings: list[str] = []
    if any(r.split for r in rows):
        warnings.append("the rows were split before; every row was assigned again")
    stratify = labels if opts.stratify and labels is not None else None
    assignment, stratified = _assign(len(rows), stratify, opts, warnings)
    out = [r.model_copy(update={"split": assignment[i]}) for i, r in enumerate(rows)]
    counts = Counter(assignment)
    return out, SplitReport(counts={s: counts.get(s, 0) for s in SPLITS}, stratified=stratified, warnings=warnings)


def _check_size(n: int, opts: SplitOptions) -> None:
    """Refuse up front when a requested split would get no row, with sklearn's own rounding."""
    held = opts.validation + opts.test
    n_held = math.ceil(held * n) if held else 0
    n_test = math.ceil(opts.test / held * n_held) if opts.test and opts.validation else (n_held if opts.test else 0)
    sizes = {"train": n - n_held, "validation": n_held - n_test, "test": n_test}
    wanted = {"train": 1.0, "validation": opts.validation, "test": opts.test}
    empty = [s for s, frac in wanted.items() if frac > 0 and sizes[s] < 1]
    if empty:
        got = ", ".join(f"{s} {sizes[s]}" for s in wanted if wanted[s] > 0)
        raise InvalidInput(f"the dataset has {n} row(s): too few to split ({got}); add rows or change the "
                           "validation/test fractions")


def _assign(n: int, labels: list[str] | None, opts: SplitOptions, warnings: list[str]) -> tuple[list[str], bool]:
    import numpy as np  # loaded only when splitting, not for every CLI start

    index = np.arange(n)
    assignment = ["train"] * n
    held = opts.validation + opts.test
    if held == 0:
        return assignment, False
    y = np.asarray(labels) if labels is not None else None
    _, hold, ok1 = _cut(index, y, held, opts.seed, warnings, "train vs held-out")
    if opts.validation == 0 or opts.test == 0:
        for i in hold:
            assignment[i] = "validation" if opts.validation else "test"
        return assignment, labels is not None and ok1
    valid, test, ok2 = _cut(hold, y[hold] if y is not None else None, opts.test / held, opts.seed, warnings,
                            "validation vs test")
    for i in valid:
        assignment[i] = "validation"
    for i in test:
        assignment[i] = "test"
    return assignment, labels is not None and ok1 and ok2


def _cut(index: np.ndarray, y: np.ndarray | None, size: float, seed: int, warnings: list[str],
         what: str) -> tuple[np.ndarray, np.ndarray, bool]:
    from sklearn.model_selection import train_test_split  # imported here: ~1 s that other commands skip

    if y is not None:
        try:
            a, b = train_test_split(index, test_size=size, random_state=seed, stratify=y)
            return a, b, True
        except ValueError as exc:
            rare = ", ".join(f"{k!r} ({v})" for k, v in Counter(y.tolist()).most_common()[-3:])
            warnings.append(f"{what}: not stratified ({exc}); rarest classes: {rare}")
    a, b = train_test_split(index, test_size=size, random_state=seed)
    return a, b, False
