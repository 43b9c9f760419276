"""The preference method ``dpo``: a chat model learns which of two answers people prefer.

A preference pair is an sft row that also names a ``rejected`` answer (the loop makes them from a
thumbs-down answer and its correction, or a thumbs-down and a thumbs-up answer to the same prompt).
The method trains LoRA adapters, like ``lora``, with TRL's DPO loss plus the SFT loss of the chosen
answer (``loss_type=["sigmoid", "sft"]``): the chosen answer is learned as an answer and the rejected
one pushed below it. A fresh adapter's reference model is the base itself (the adapter switched off).
A run that continues a stored adapter (``start_from``: the loop's rounds start from the serving
adapter, so preference training refines what SFT taught rather than starting over) takes that adapter
as its reference: TRL keeps a frozen copy of it beside the trained one, and only the trained one is
saved. Either way nothing but an adapter is held twice in memory.

It runs inside the one training loop (``llmos.train.runner``): ``inputs`` swaps the task's encoded rows
for the pairs and the plain Trainer for ``PreferenceTrainer`` (TRL's DPOTrainer with llmos's atomic
checkpoints), and the job's progress, pause points, checkpoints and publishing stay as for every method.
Rows without a rejected answer do not train here; a dataset without any pair is refused at planning.
A loss that stops being finite fails the job at once: a diverged adapter is never published.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.data.rows import Row, SftRow, Task
from llmos.errors import InvalidInput
from llmos.train.methods import LoraMethod, register_method

if TYPE_CHECKING:
    from llmos.store.manifest import ModelInfo
    from llmos.train.runner import CheckpointingTrainer, TrainInputs
    from llmos.train.task_kinds import TrainTask

BETA = 0.1  # DPO's temperature: how far the adapter may move from the base (TRL's default)
LOSSES = ["sigmoid", "sft"]  # DPO's pairwise loss plus the chosen answer's SFT loss
REFERENCE = "ref"  # the adapter name TRL gives its frozen copy of a pretrained adapter (the reference model)


class DpoMethod(LoraMethod):
    name = "dpo"

    def check(self, task: "TrainTask", base: "ModelInfo") -> None:
        if task.name != Task.sft:
            raise InvalidInput(f"method dpo trains chat models (task sft) on preference pairs, not {task.name.value}; "
                               "use lora or full", param="method")

    def check_rows(self, train: Sequence[Row], where: str) -> None:
        if not pairs(train):
            raise InvalidInput(f"{where} has no preference pair to train method dpo on: a pair is an sft row with a "
                               "`rejected` answer beside the chosen one", param="dataset")

    def inputs(self, inputs: "TrainInputs", train: Sequence[Row], tokenizer: Any, template: str | None) -> "TrainInputs":
        from datasets import Dataset

        if template:
            tokenizer.chat_template = template  # TRL renders the pairs with the tokenizer's template: the stored one
        rows = Dataset.from_list([pair_record(r) for r in pairs(train)])
        return replace(inputs, train=rows, validation=[], collator=None, metric="loss", greater_is_better=False,
                       compute_metrics=None, make_trainer=_trainer_maker(tokenizer))


    def save(self, model: Any, task: "TrainTask", out: Path) -> Any:
        if REFERENCE in getattr(model, "peft_config", {}):
            model.delete_adapter(REFERENCE)  # TRL's frozen copy of the adapter a run started from
        return super().save(model, task, out)


def pairs(rows: Sequence[Row]) -> list[SftRow]:
    return [r for r in rows if isinstance(r, SftRow) and r.rejected.strip()]


def pair_record(row: SftRow) -> dict[str, Any]:
    """TRL's conversational preference record: the prompt turns, then the chosen and the rejected turn."""
    turns = [{"role": m.role, "content": m.content} for m in row.to_messages()]
    return {"prompt": turns[:-1], "chosen": [turns[-1]], "rejected": [{"role": "assistant", "content": row.rejected}]}


def _trainer_maker(tokenizer: Any) -> Any:
    def make(inputs: "TrainInputs", out: Path) -> "CheckpointingTrainer":
        from trl import DPOConfig

        from llmos.train.runner import training_args

        cfg = inputs.config
        args = training_args(cfg, out, "loss", False, args_class=DPOConfig, eval_strategy="no", save_strategy="no",
                             load_best_model_at_end=False, metric_for_best_model=None, eval_steps=None,
                             save_steps=None, beta=BETA, loss_type=LOSSES, max_length=cfg.max_length,
                             precompute_ref_log_probs=False, prediction_loss_only=True)
        trainer = _preference_trainer_class()(model=inputs.model, args=args, train_dataset=inputs.train,
                                              processing_class=tokenizer)
        trainer.add_callback(_divergence_guard())
        return trainer

    return make


def _preference_trainer_class() -> type:
    from trl import DPOTrainer

    from llmos.train.runner import CheckpointingTrainer

    class PreferenceTrainer(CheckpointingTrainer, DPOTrainer):
        """TRL's DPO trainer with llmos's atomic checkpoints."""

    return PreferenceTrainer


def _divergence_guard() -> Any:
    from transformers import TrainerCallback

    class DivergenceGuard(TrainerCallback):
        """Fails the run at the first non-finite loss: a diverged adapter must not reach the store."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                   **kwargs: Any) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise FloatingPointError(f"preference training diverged: loss {loss} at step {state.global_step}; "
                                         "nothing was published (try a lower learning_rate)")

    return DivergenceGuard()


register_method(DpoMethod())
