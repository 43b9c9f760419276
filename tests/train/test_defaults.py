"""Default hyperparameters: per task and method, and more epochs for small datasets."""

from __future__ import annotations

import pytest

from llmos.data.rows import Task
from llmos.train.config import MAX_STRETCHED_EPOCHS, Hyperparameters, fit_to_data, resolve, stretch_epochs


def stretched(task: Task, rows: int, **hp: object) -> float:
    params = Hyperparameters(**hp)
    return stretch_epochs(resolve(params, task, "full"), params, task, rows).epochs


@pytest.mark.parametrize(("rows", "epochs"), [
    (67_349, 3),  # SST-2's train split: 3 epochs are already 6,315 steps
    (16_000, 3),  # 500 steps an epoch: 3 make 1,500
    (8_002, 6),  # Banking77's 80%: 251 steps an epoch, 6 reach 1,500
    (1_000, 20),  # 32 steps an epoch: capped
])
def test_small_classification_sets_train_for_at_least_1500_steps(rows: int, epochs: int) -> None:
    assert stretched(Task.classify, rows) == epochs
    if epochs < MAX_STRETCHED_EPOCHS:
        assert epochs * -(-rows // 32) >= 1500


def test_tagging_takes_1000_steps_and_sft_keeps_its_epochs() -> None:
    assert stretched(Task.tag, 14_041) == 4  # CoNLL-2003 train: 439 steps an epoch
    assert stretched(Task.tag, 4_000) == 8
    assert stretched(Task.sft, 200) == 2


def test_what_a_user_sets_is_kept() -> None:
    assert stretched(Task.classify, 1_000, epochs=2) == 2
    assert stretched(Task.classify, 1_000, max_steps=10) == 3  # max_steps bounds the run instead
    assert stretched(Task.classify, 1_000, batch_size=8) == 12  # 125 steps an epoch


def patience(rows: int, **hp: object) -> int:
    params = Hyperparameters(**hp)
    return fit_to_data(resolve(params, Task.classify, "full"), params, Task.classify, rows).early_stopping_patience


def test_a_small_dataset_is_not_stopped_early_on_noise() -> None:
    # 30 rows in batches of 8: 4 steps an epoch, stretched to 20 epochs (80 steps), a validation each
    # epoch. The old default (2) could end it at step 16 of 80; now it waits half the run's validations.
    assert patience(30, batch_size=8) == 10
    assert patience(30, batch_size=8, eval_steps=2) == 20  # 40 validations
    assert patience(30, batch_size=8, early_stopping_patience=1) == 1  # what a user sets is kept
    assert patience(30, batch_size=8, early_stopping_patience=0) == 0  # never stop
    assert patience(67_349) == 2  # a large dataset keeps the usual default
