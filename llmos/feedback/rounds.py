"""One round's training set: the root dataset plus every corrected example, with a stable held-out share.

The same for every task: classify and tag corrections become labelled rows; corrections of chat and
completion answers (an sft root) become SFT rows of the logged conversation and the better answer,
carrying the rejected answer when a user marked it down (a preference pair).

* The root is the dataset the serving version was trained on when the loop first ran (later rounds
  keep starting from it, so feedback is never counted twice and the validation split never moves).
* Corrections are deduplicated by input text (the newest wins) and replace root training rows with
  the same text (the user's word is newer than the data's).
* A correction goes to the held-out ``test`` split when a seeded hash of its text falls under
  ``holdout``: the same text lands on the same side in every round, so the gate's held-out set only
  grows and is never trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from llmos.data.info import DatasetInfo, Derivation
from llmos.data.registry import Datasets
from llmos.data.rows import Row, SftRow, Task, input_text
from llmos.feedback.shapes import TEXT_ROUTES, Example, to_rows

VALIDATION_SHARE = 0.1  # carved from a root without a validation split


class RoundWaits(Exception):
    """A round cannot start yet for want of rows of one kind; the message says which and how many."""


@dataclass
class RoundData:
    dataset: DatasetInfo
    trained_feedback: int
    held_out_feedback: int
    preference_pairs: int = 0  # trained rows that also name a rejected answer


def stable_fraction(seed: int, text: str) -> float:
    """A number in [0, 1) fixed by ``seed`` and ``text``."""
    digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def build_round(datasets: Datasets, name: str, root_ref: str, examples: list[Example], holdout: float,
                seed: int, confirmed: list[Example] | None = None, train_confirmed: bool = False) -> RoundData:
    """Register ``<name>-feedback`` vN = root train/validation + corrections (train / held-out test).

    ``confirmed`` answers (thumbs-up, ``llmos.feedback.rated``) on the held-out side join the test split,
    so the gate scores both versions on answers the serving version got right as well as on the ones it
    got wrong; on the training side they train only with ``train_confirmed``. A correction always wins
    over a confirmation of the same input."""
    root = datasets.get(root_ref)
    task = root.task
    latest = _latest(task, examples)
    good = {k: v for k, v in _latest(task, confirmed or []).items() if k not in latest}
    train, validation = _root_rows(datasets, root, seed)
    train = [r for r in train if input_text(r) not in latest]
    in_validation = {input_text(r) for r in validation}
    held, trained = _sides(latest, in_validation, holdout, seed)
    held_good, trained_good = _sides(good, in_validation, holdout, seed)
    trained += trained_good if train_confirmed else []
    held += held_good
    rows = (train + [r.model_copy(update={"split": "train"}) for r in trained] + validation
            + [r.model_copy(update={"split": "test"}) for r in held])
    pairs = sum(1 for r in trained if isinstance(r, SftRow) and r.rejected)
    derivation = Derivation(operation="feedback", params={"root": root.ref, "holdout": holdout, "seed": seed},
                            report={"root_train_rows": len(train), "feedback_train_rows": len(trained),
                                    "feedback_held_out_rows": len(held), "validation_rows": len(validation),
                                    "confirmed_held_out_rows": len(held_good), "preference_pairs": pairs})
    info = datasets.register_rows(f"{name}-feedback", rows, parent=root, derivation=derivation)
    return RoundData(info, len(trained), len(held), pairs)


def trained_pairs(examples: list[Example], holdout: float, seed: int) -> int:
    """How many preference pairs a round of ``examples`` would train on (newest per input, training side)."""
    latest: dict[str, Example] = {}
    for e in examples:
        if e.route in TEXT_ROUTES:
            latest[input_text(to_rows([e])[0])] = e
    return sum(1 for text, e in latest.items() if e.rejected and stable_fraction(seed, text) >= holdout)


def _latest(task: Task, examples: list[Example]) -> dict[str, Row]:
    """The rows of ``task``'s examples by input text; examples come oldest first, so the newest wins."""
    routes = TEXT_ROUTES if task == Task.sft else (task.value,)
    latest: dict[str, Row] = {}
    for row in to_rows([e for e in examples if e.route in routes]):
        latest[input_text(row)] = row
    return latest


def _sides(rows: dict[str, Row], in_validation: set[str], holdout: float, seed: int) -> tuple[list[Row], list[Row]]:
    """(held out, trained): a validation text is never trained on (it judges); else a stable hash decides."""
    held, trained = [], []
    for text, row in rows.items():
        (held if text in in_validation or stable_fraction(seed, text) < holdout else trained).append(row)
    return held, trained


def _root_rows(datasets: Datasets, root: DatasetInfo, seed: int) -> tuple[list[Row], list[Row]]:
    rows = list(datasets.rows(root.name, root.version))
    splits = root.counts.splits
    val_split = "validation" if "validation" in splits else "test" if "test" in splits else None
    if val_split is None:  # unsplit root: a stable share becomes the validation the gate keeps using
        val = [r for r in rows if stable_fraction(seed + 1, input_text(r)) < VALIDATION_SHARE]
        keep = [r for r in rows if stable_fraction(seed + 1, input_text(r)) >= VALIDATION_SHARE]
    else:
        val = [r for r in rows if r.split == val_split]
        keep = [r for r in rows if r.split == "train" or not r.split]
    return ([r.model_copy(update={"split": "train"}) for r in keep],
            [r.model_copy(update={"split": "validation"}) for r in val])
