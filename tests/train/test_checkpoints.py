"""Checkpoints are written the way Trainer resumes from them, atomically: a full disk fails the save
(and so the job) and leaves the earlier checkpoint whole."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from llmos.data.rows import ClassifyRow, Task
from llmos.train.config import Hyperparameters, resolve
from llmos.train.runner import NullReporter, TrainInputs, build_trainer, train
from llmos.train.task_kinds import get_task
from tests.train.conftest import MINILM, Home


def tiny_inputs(home: Home, **hp: object) -> TrainInputs:
    from transformers import AutoTokenizer

    home.add_builtin(MINILM)
    folder = home.rt.store.registry.snapshot(MINILM)
    task = get_task(Task.classify)
    cfg = resolve(Hyperparameters(**{"batch_size": 4, "max_length": 16, **hp}), Task.classify, "full")
    tok = AutoTokenizer.from_pretrained(folder)
    rows = [ClassifyRow(text=t, label=lab) for t, lab in [("good", "1"), ("bad", "0")] * 4]
    items = task.encode(rows, tok, ["0", "1"], cfg, None)
    return TrainInputs(task.load_model(folder, ["0", "1"], tok), items, items[:4], task.collator(tok), cfg,
                       "accuracy", True, task.compute_metrics(["0", "1"]))


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_full_disk_fails_the_save_and_keeps_the_earlier_checkpoint(home: Home, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    trainer, _ = build_trainer(tiny_inputs(home, max_steps=2), NullReporter(tmp_path))
    trainer.train()
    good = trainer.write_checkpoint()
    assert good.name == "checkpoint-2" and {"optimizer.pt", "scheduler.pt", "trainer_state.json",
                                            "model.safetensors", "rng_state.pth"} <= set(contents(good))
    before = contents(good)

    def full_disk(_folder: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer, "_save_optimizer_and_scheduler", full_disk)
    trainer.state.global_step = 3
    with pytest.raises(OSError, match="No space left"):
        trainer.write_checkpoint()
    assert contents(good) == before  # the earlier checkpoint is whole
    assert sorted(p.name for p in good.parent.iterdir()) == ["checkpoint-2"]  # no half-written folder
    trainer.state.global_step = 2
    with pytest.raises(OSError, match="No space left"):  # rewriting the same step keeps the old one too
        trainer.write_checkpoint()
    assert contents(good) == before


class PausingReporter(NullReporter):
    """Asks for a pause (checkpoint and stop) at the first pause point."""

    def pause_point(self, save_checkpoint=None):  # type: ignore[no-untyped-def]
        save_checkpoint()
        raise KeyboardInterrupt("paused")


def test_a_checkpoint_failure_fails_the_training_run(home: Home, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import Trainer

    def full_disk(self: object, _folder: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Trainer, "_save_rng_state", full_disk)
    with pytest.raises(OSError, match="No space left"):  # the job's runner records it as failed
        train(tiny_inputs(home, max_steps=3), PausingReporter(tmp_path))
    assert not list((tmp_path / "trainer").glob("*checkpoint*"))
