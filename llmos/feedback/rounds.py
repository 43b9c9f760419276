"""One round's training set: the root dataset plus every corrected example, with a stable held-out share.

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
from llmos.data.rows import Row, Task, input_text
from llmos.errors import InvalidInput
from llmos.feedback.shapes import Example, to_rows

VALIDATION_SHARE = 0.1  # carved from a root without a validation split


@dataclass
class RoundData:
    dataset: DatasetInfo
    trained_feedback: int
    held_out_feedback: int


def stable_fraction(seed: int, text: str) -> float:
    """A number in [0, 1) fixed by ``seed`` and ``text``."""
    digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def build_round(datasets: Datasets, name: str, root_ref: str, examples: list[Example], holdout: float,
                seed: int) -> RoundData:
    """Register ``<name>-feedback`` vN = root train/validation + corrections (train / held-out test)."""
    root = datasets.get(root_ref)
    task = root.task
    if task not in (Task.classify, Task.tag):
        raise InvalidInput(f"the loop retrains classify and tag models; {root.ref} holds {task.value} rows")
    latest: dict[str, Row] = {}
    for row in to_rows([e for e in examples if e.route == task.value]):
        latest[input_text(row)] = row  # examples come oldest first: the newest correction wins
    train, validation = _root_rows(datasets, root, seed)
    train = [r for r in train if input_text(r) not in latest]
    held, trained = [], []
    in_validation = {input_text(r) for r in validation}
    for text, row in latest.items():  # a correction of a validation text is never trained on: it judges
        (held if text in in_validation or stable_fraction(seed, text) < holdout else trained).append(row)
    rows = (train + [r.model_copy(update={"split": "train"}) for r in trained] + validation
            + [r.model_copy(update={"split": "test"}) for r in held])
    derivation = Derivation(operation="feedback", params={"root": root.ref, "holdout": holdout, "seed": seed},
                            report={"root_train_rows": len(train), "feedback_train_rows": len(trained),
                                    "feedback_held_out_rows": len(held), "validation_rows": len(validation)})
    info = datasets.register_rows(f"{name}-feedback", rows, parent=root, derivation=derivation)
    return RoundData(info, len(trained), len(held))


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
