"""The one training loop: ``transformers.Trainer`` for every task and method, with llmos's callbacks.

What llmos adds to a plain Trainer run, and nothing else (``bench/train.py`` checks the cost):

* ``JobCallback`` reports each step's loss, learning rate, ETA and the latest validation metric to
  the job (``ctx.progress``) and calls ``ctx.pause_point(save)`` at every step boundary (before each
  optimizer step but the first, after the previous step was logged, validated and saved), with
  gradient accumulation 1, so a pause loses no step; it also writes a checkpoint every
  ``checkpoint_steps`` steps, so a runner killed without warning resumes from a recent one.
* ``CheckpointingTrainer`` writes every checkpoint (periodic, best-model, pause) the way Trainer
  resumes from (weights, optimizer, scheduler, RNG, trainer state) but atomically: into a hidden
  temp folder, renamed into place once complete. A full disk fails the job and leaves the earlier
  checkpoint whole; a resumed run continues with ``trainer.train(resume_from_checkpoint=...)``.
* Early stopping on the validation metric (``EarlyStoppingCallback``), with the best checkpoint
  loaded at the end (``load_best_model_at_end``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ExportableState, PrinterCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from llmos.train.config import TrainConfig

TRAINER_STATE = "trainer_state.json"


class Reporter(Protocol):
    """The part of a job's ``JobContext`` the loop uses (``NullReporter`` runs outside jobs)."""

    resume_from: Path | None
    checkpoint_dir: Path

    def progress(self, step: int, total: int | None = None, **metrics: float) -> None: ...
    def pause_point(self, save_checkpoint: Callable[[], Any] | None = None) -> None: ...
    def save_checkpoint(self, save: Callable[[], Any]) -> Path: ...
    def event(self, kind: str, **data: Any) -> None: ...
    def log(self, msg: str) -> None: ...


class NullReporter:
    """Training outside a job (benchmarks, notebooks): no pauses; checkpoints under ``checkpoint_dir``."""

    def __init__(self, checkpoint_dir: Path, resume_from: Path | None = None) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.resume_from = resume_from

    def progress(self, step: int, total: int | None = None, **metrics: float) -> None:
        pass

    def pause_point(self, save_checkpoint: Callable[[], Any] | None = None) -> None:
        pass

    def save_checkpoint(self, save: Callable[[], Any]) -> Path:
        return Path(save() or self.checkpoint_dir)

    def event(self, kind: str, **data: Any) -> None:
        pass

    def log(self, msg: str) -> None:
        pass


class ListDataset(torch.utils.data.Dataset):
    """Encoded rows (dicts of lists) for Trainer's data loader."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


@dataclass
class TrainInputs:
    """Everything one run needs: the model to train, encoded rows and how to score them."""

    model: Any
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    collator: Callable[[list[dict[str, Any]]], dict[str, Any]]
    config: TrainConfig
    metric: str = "loss"  # validation metric picking the best checkpoint
    greater_is_better: bool = False
    compute_metrics: Callable[[Any], dict[str, float]] | None = None
    # A method with a loss of its own builds its Trainer (a CheckpointingTrainer subclass) from these
    # inputs and the run's output folder; None: the plain CheckpointingTrainer on the encoded rows.
    make_trainer: Callable[["TrainInputs", Path], "CheckpointingTrainer"] | None = None


@dataclass
class TrainOutcome:
    model: Any  # the best checkpoint's weights (or the last, without validation)
    log_history: list[dict[str, Any]]
    global_step: int
    max_steps: int
    best_metric: float | None
    best_step: int | None
    stopped_early: bool
    metrics: dict[str, float] = field(default_factory=dict)  # Trainer's: train_runtime, samples per second...


def training_args(cfg: TrainConfig, out: Path, metric: str, greater_is_better: bool, *,
                  args_class: type[TrainingArguments] = TrainingArguments, **overrides: Any) -> TrainingArguments:
    """The Trainer settings of a run; ``bench/train.py`` gives a plain Trainer the same ones. A method with
    a Trainer of its own passes that Trainer's arguments class (a TrainingArguments subclass)."""
    strategy = "steps" if cfg.eval_steps else "epoch"
    cuda = torch.cuda.is_available()
    values: dict[str, Any] = dict(
        output_dir=str(out), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_ratio,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size * 2,
        gradient_accumulation_steps=1, lr_scheduler_type="linear", seed=cfg.seed,
        eval_strategy=strategy, save_strategy=strategy, eval_steps=cfg.eval_steps, save_steps=cfg.eval_steps,
        save_total_limit=2, load_best_model_at_end=True, metric_for_best_model=metric,
        greater_is_better=greater_is_better, logging_strategy="steps", logging_steps=1,
        report_to="none", disable_tqdm=True, remove_unused_columns=False, label_names=["labels"],
        dataloader_num_workers=0, use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(),
        prediction_loss_only=metric == "loss", save_only_model=False,
    )
    values.update(overrides)
    return args_class(**values)


class CheckpointingTrainer(Trainer):
    """A Trainer whose checkpoints are written atomically and reported to the job as resume points."""

    on_checkpoint: Callable[[Path], None] | None = None

    def write_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>`` as Trainer resumes from it: temp folder first, then one rename."""
        run_dir = Path(self.args.output_dir)
        final = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        tmp = run_dir / f".tmp-{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self._write_into(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves the earlier checkpoints as they were
            raise
        _swap_into_place(tmp, final)
        return final

    def _write_into(self, folder: Path) -> None:
        self.store_flos()
        self.save_model(str(folder), _internal_call=True)
        self._save_optimizer_and_scheduler(str(folder))
        self._save_scaler(str(folder))
        self._save_rng_state(str(folder))
        best = self.state.best_global_step
        if best:
            best_dir = folder.parent / f"{PREFIX_CHECKPOINT_DIR}-{best}"
            if best == self.state.global_step or best_dir.is_dir():
                self.state.best_model_checkpoint = str(best_dir)
        for cb in self.callback_handler.callbacks + [self.control]:
            if isinstance(cb, ExportableState):  # early stopping's patience counter resumes too
                self.state.stateful_callbacks[type(cb).__name__] = cb.state()
        self.state.save_to_json(str(folder / TRAINER_STATE))
        _fsync_tree(folder)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Trainer's own saves (with each validation): atomic, reported, then old ones rotated out."""
        path = self.write_checkpoint()
        if self.on_checkpoint is not None:
            self.on_checkpoint(path)
        self.rotate()

    def rotate(self) -> None:
        rotate_checkpoints(output_dir=self.args.output_dir, save_total_limit=self.args.save_total_limit,
                           best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` (the same step saved again) is replaced."""
    if final.exists():
        trash = final.with_name(f".old-{final.name}")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


class JobCallback(TrainerCallback):
    """Progress, pause points and periodic checkpoints of one run (see the module docstring)."""

    def __init__(self, trainer: CheckpointingTrainer, reporter: Reporter, metric: str, every: int) -> None:
        self.trainer = trainer
        self.reporter = reporter
        self.metric = metric
        self.every = every
        self.last_saved = -1
        self.metrics: dict[str, float] = {}

    def save(self) -> Path:
        """The checkpoint of the current step (written once, even when asked twice)."""
        step = self.trainer.state.global_step
        final = Path(self.trainer.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        if self.last_saved != step or not final.is_dir():
            final = self.trainer.write_checkpoint()
            self.last_saved = step
        return final

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 0:
            return
        if state.global_step % self.every == 0 and self.last_saved != state.global_step:
            self.reporter.save_checkpoint(self.save)
            self.trainer.rotate()
        self.reporter.pause_point(self.save)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last_saved = state.global_step

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            self.metrics.update(loss=float(logs["loss"]), learning_rate=float(logs.get("learning_rate", 0.0)))
            self.reporter.progress(state.global_step, state.max_steps, **self.metrics)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        metrics = {k.removeprefix("eval_"): float(v) for k, v in (metrics or {}).items()
                   if isinstance(v, (int, float)) and k != "epoch" and not k.endswith(("runtime", "per_second"))}
        if self.metric in metrics:
            self.metrics[f"eval_{self.metric}"] = metrics[self.metric]
        self.reporter.event("eval", step=state.global_step, epoch=state.epoch, **metrics)
        self.reporter.progress(state.global_step, state.max_steps, **self.metrics)


def build_trainer(inputs: TrainInputs, reporter: Reporter) -> tuple[CheckpointingTrainer, JobCallback]:
    cfg = inputs.config
    out = reporter.checkpoint_dir / "trainer"
    if inputs.make_trainer is not None:
        trainer = inputs.make_trainer(inputs, out)
    else:
        trainer = CheckpointingTrainer(
            model=inputs.model, args=training_args(cfg, out, inputs.metric, inputs.greater_is_better),
            data_collator=inputs.collator, train_dataset=ListDataset(inputs.train),
            eval_dataset=ListDataset(inputs.validation), compute_metrics=inputs.compute_metrics,
            preprocess_logits_for_metrics=_argmax if inputs.compute_metrics else None,
        )
    trainer.remove_callback(PrinterCallback)  # JobCallback reports; a line per step in the log is noise
    if cfg.early_stopping_patience and trainer.args.eval_strategy != "no":
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    callback = JobCallback(trainer, reporter, inputs.metric, cfg.checkpoint_steps)
    trainer.add_callback(callback)
    trainer.on_checkpoint = lambda path: reporter.save_checkpoint(lambda: path)
    return trainer, callback


def train(inputs: TrainInputs, reporter: Reporter) -> TrainOutcome:
    """Run (or resume) training to the end; the returned model holds the best validated weights."""
    trainer, _ = build_trainer(inputs, reporter)
    resume = _resumable(reporter)
    if resume is not None:
        reporter.log(f"resuming training from checkpoint {resume}")
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    state = trainer.state
    stopped = state.global_step < state.max_steps
    return TrainOutcome(model=trainer.model, log_history=list(state.log_history), global_step=state.global_step,
                        max_steps=state.max_steps, best_metric=state.best_metric, best_step=state.best_global_step,
                        stopped_early=stopped, metrics=dict(output.metrics))


def _resumable(reporter: Reporter) -> Path | None:
    path = reporter.resume_from
    if path is None:
        return None
    if not (Path(path) / TRAINER_STATE).is_file():
        reporter.log(f"checkpoint {path} is incomplete; starting from the beginning")
        return None
    return Path(path)


def _argmax(logits: Any, labels: Any) -> Any:
    """Keep class ids, not logits, across the validation set (much less memory)."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)
