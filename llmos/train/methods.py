"""The tuning-method registry: which weights train, and what the store receives afterwards.

Built-ins register one call each, like PEFT's ``register_peft_method``:

* ``full``: every weight trains; the result is a full model.
* ``lora``: low-rank adapters on every linear layer (or ``target_modules``), the new head trained in
  full (PEFT ``modules_to_save``). For classify / tag the adapters are merged into the weights
  (``merge_and_unload``) and the result is a plain classifier, which serves like any other; for sft
  the result is an adapter over its base, served in the base's mixed-adapter batches.
* ``prompt`` / ``prefix``: learned virtual tokens (and the head). The result is an adapter that gets
  an engine of its own (it changes the input sequence, so it cannot share a batch with other adapters).
  They are offered where they can be served: prompt tuning for classify (PEFT prepends the virtual
  tokens to token-level outputs, so tag is out); prefix tuning for classify / tag on decoder models
  (encoders in transformers 5 take no ``past_key_values``, which prefix tuning feeds). Neither for sft:
  the batching generator cannot serve prompt-learning adapters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.data.rows import Task
from llmos.errors import InvalidInput
from llmos.registry import Registry

if TYPE_CHECKING:
    from collections.abc import Sequence

    from llmos.data.rows import Row
    from llmos.store.manifest import ModelInfo
    from llmos.train.runner import TrainInputs
    from llmos.train.config import TrainConfig
    from llmos.train.task_kinds import TrainTask

HEAD_MODULES = ("classifier", "score", "lm_head", "pooler")  # never LoRA targets: trained whole or left alone


class Method(ABC):
    """One way to fine-tune. ``peft_type`` is None for full fine-tuning."""

    name: str
    peft_type: str | None = None

    def check(self, task: "TrainTask", base: "ModelInfo") -> None:
        """Raise InvalidInput when this method cannot fine-tune ``base`` for ``task`` (or serve the result)."""

    def check_rows(self, train: "Sequence[Row]", where: str) -> None:
        """Raise InvalidInput when the training rows cannot train with this method."""

    @abstractmethod
    def wrap(self, model: Any, task: "TrainTask", cfg: "TrainConfig") -> Any:
        """The model to train (with only the trainable weights requiring gradients)."""

    def continue_adapter(self, model: Any, folder: Path) -> Any:
        """The model to train, starting from the stored adapter in ``folder`` (planning allows this for
        LoRA methods alone): its weights and its LoRA settings, trainable."""
        from peft import PeftModel

        return PeftModel.from_pretrained(model, folder, is_trainable=True)

    def inputs(self, inputs: "TrainInputs", train: "Sequence[Row]", tokenizer: Any, template: str | None) -> "TrainInputs":
        """What the one training loop runs: the task's encoded rows and Trainer, or (a method with a loss of
        its own, such as the preference method) its own rows and Trainer subclass."""
        return inputs

    def result_kind(self, task: "TrainTask") -> str:
        """"model" (full weights) or "adapter" (weights over the base)."""
        return "model"

    def save(self, model: Any, task: "TrainTask", out: Path) -> Any:
        """Write the trained weights to ``out`` as the store will hold them; returns the saved model."""
        model.save_pretrained(out, safe_serialization=True)
        return model


class FullMethod(Method):
    name = "full"

    def wrap(self, model: Any, task: "TrainTask", cfg: "TrainConfig") -> Any:
        return model


class PeftMethod(Method):
    """Shared by the PEFT methods: wrap with a config, keep the head trainable, save the adapter."""

    def wrap(self, model: Any, task: "TrainTask", cfg: "TrainConfig") -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self.config(model, task, cfg))

    @abstractmethod
    def config(self, model: Any, task: "TrainTask", cfg: "TrainConfig") -> Any: ...

    def result_kind(self, task: "TrainTask") -> str:
        return "adapter"


class LoraMethod(PeftMethod):
    name = "lora"
    peft_type = "LORA"

    def config(self, model: Any, task: "TrainTask", cfg: "TrainConfig") -> Any:
        from peft import LoraConfig

        return LoraConfig(task_type=task.peft_task_type, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                          lora_dropout=cfg.lora_dropout, target_modules=cfg.target_modules or linear_targets(model))

    def result_kind(self, task: "TrainTask") -> str:
        return "adapter" if task.head == "causal" else "model"

    def save(self, model: Any, task: "TrainTask", out: Path) -> Any:
        if self.result_kind(task) == "adapter":
            return super().save(model, task, out)
        merged = model.merge_and_unload()  # the head's trained copy (modules_to_save) replaces the original
        merged.save_pretrained(out, safe_serialization=True)
        return merged


class PromptMethod(PeftMethod):
    name = "prompt"
    peft_type = "PROMPT_TUNING"

    def check(self, task: "TrainTask", base: "ModelInfo") -> None:
        if task.name != Task.classify:
            raise InvalidInput(f"method prompt fine-tunes classify only ({_why_not(task)}); use lora or full",
                               param="method")

    def config(self, model: Any, task: "TrainTask", cfg: "TrainConfig") -> Any:
        from peft import PromptTuningConfig

        return PromptTuningConfig(task_type=task.peft_task_type, num_virtual_tokens=cfg.num_virtual_tokens)


class PrefixMethod(PeftMethod):
    name = "prefix"
    peft_type = "PREFIX_TUNING"

    def check(self, task: "TrainTask", base: "ModelInfo") -> None:
        if task.name == Task.sft:
            raise InvalidInput(f"method prefix cannot fine-tune sft ({_why_not(task)}); use lora or full",
                               param="method")
        if "generate" not in base.manifest.tasks:
            raise InvalidInput(f"method prefix needs a decoder model: {base.ref} is an encoder, and encoders in "
                               "transformers 5 take no past_key_values, which prefix tuning feeds; use prompt "
                               "or lora", param="method")

    def config(self, model: Any, task: "TrainTask", cfg: "TrainConfig") -> Any:
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(task_type=task.peft_task_type, num_virtual_tokens=cfg.num_virtual_tokens)


def _why_not(task: "TrainTask") -> str:
    if task.name == Task.sft:
        return "the batching generator serves LoRA adapters and full models, not virtual-token adapters"
    return "PEFT prepends the virtual tokens to per-token outputs, which breaks tag alignment"


def linear_targets(model: Any) -> list[str]:
    """Names of the model's linear layers (leaf names), heads left out: LoRA's default targets."""
    import torch

    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and not any(h in name.split(".") for h in HEAD_MODULES)}
    # Conv1D (GPT-2 style) layers are PEFT targets too
    names |= {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
              if type(module).__name__ == "Conv1D" and not any(h in name.split(".") for h in HEAD_MODULES)}
    return sorted(names)


# -- the registry ---------------------------------------------------------------------------------
METHODS: Registry[Method] = Registry("method", param="method")
DEFAULT_METHOD: dict[Task, str] = {Task.classify: "full", Task.tag: "full", Task.sft: "lora"}


def register_method(method: Method, *, replace: bool = False) -> None:
    METHODS.register(method.name, method, replace=replace)


def get_method(name: str) -> Method:
    return METHODS.get(name)


def method_names() -> list[str]:
    return METHODS.names()


register_method(FullMethod())
register_method(LoraMethod())
register_method(PromptMethod())
register_method(PrefixMethod())
# dpo registers itself from llmos.train.preference (imported by llmos.train), as sft does in task_kinds
