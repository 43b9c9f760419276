"""LoRA adapters on an already loaded base model, served side by side in mixed batches.

The first adapter wraps the base in a PEFT model (the base weights are shared, never reloaded);
later ones are added to that wrapper. A forward pass then names an adapter per row through PEFT's
``adapter_names`` argument, with ``"__base__"`` for rows that want the bare base model.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import MODEL_TYPE_TO_PEFT_MODEL_MAPPING, PeftConfig, PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import AuxiliaryTrainingWrapper

from llmos.errors import Conflict, InvalidInput, UnsafeFormat

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class AdapterSet:
    """The adapters loaded on one engine's model, and the module to call for a forward pass."""

    def __init__(self, base: torch.nn.Module, device: torch.device) -> None:
        self._base = base
        self._device = device
        self._peft: PeftModel | None = None
        self._paths: dict[str, str] = {}

    @property
    def model(self) -> torch.nn.Module:
        """The module to run: the PEFT wrapper once an adapter is loaded, else the base."""
        return self._peft if self._peft is not None else self._base

    def names(self) -> list[str]:
        return sorted(self._paths)

    def check(self, name: str | None) -> None:
        """Raise InvalidInput unless ``name`` is None (the base) or a loaded adapter."""
        if name is not None and name not in self._paths:
            loaded = ", ".join(self.names()) or "none"
            raise InvalidInput(f"unknown adapter {name!r}; loaded adapters: {loaded}", adapters=self.names())

    def forward_kwargs(self, names: list[str | None]) -> dict[str, object]:
        """Extra forward() arguments that route each row to its adapter."""
        if self._peft is None:
            return {}
        return {"adapter_names": [n if n is not None else BASE for n in names]}

    # -- loading ------------------------------------------------------------------------------
    def add(self, name: str, path: str | Path) -> None:
        if name == BASE or not name:
            raise InvalidInput(f"{name!r} cannot name an adapter")
        folder = Path(path)
        if name in self._paths:
            if self._paths[name] == str(folder):
                return  # loading the same folder twice is harmless: keep the first
            raise Conflict(f"adapter {name!r} is already loaded from {self._paths[name]}; remove it first")
        config = _read_config(folder)
        if self._peft is None:
            self._peft = self._wrap(name, folder, config)
        else:
            self._load_more(name, folder)
        self._peft.eval()
        self._paths[name] = str(folder)

    def _wrap(self, name: str, folder: Path, config: PeftConfig) -> PeftModel:
        config.inference_mode = True
        cls = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(config.task_type, PeftModel)
        try:
            with _quiet_peft():
                peft = cls(self._base, config, name)
                peft.load_adapter(str(folder), name, is_trainable=False, torch_device=str(self._device))
        except Exception as exc:
            _strip_tuner_layers(self._base)  # put the base back exactly as it was
            raise InvalidInput(f"cannot load adapter {name!r} from {folder}: {exc}") from exc
        return peft

    def _load_more(self, name: str, folder: Path) -> None:
        try:
            with _quiet_peft():
                self._peft.load_adapter(str(folder), name, is_trainable=False, torch_device=str(self._device))
        except Exception as exc:
            if name in self._peft.peft_config:
                self._peft.delete_adapter(name)
            raise InvalidInput(f"cannot load adapter {name!r} from {folder}: {exc}") from exc

    def remove(self, name: str) -> None:
        if name not in self._paths:
            return
        del self._paths[name]
        if not self._paths:
            # The last adapter out: unwrap so base-only batches skip PEFT's routing entirely. Not
            # PeftModel.unload(): it would keep an adapter's copy of a classifier head.
            _strip_tuner_layers(self._base)
            self._peft = None
        else:
            with _quiet_peft():
                self._peft.delete_adapter(name)


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """Hide warnings PEFT raises about things this engine does on purpose."""
    with warnings.catch_warnings():
        # PEFT asks transformers a deprecated question while wrapping: nothing for us to fix.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        # Which adapter is "active" does not matter: every forward pass names its adapters per row.
        warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
        yield


def _read_config(folder: Path) -> PeftConfig:
    if not (folder / "adapter_config.json").is_file():
        raise InvalidInput(f"{folder} is not a PEFT adapter folder (no adapter_config.json)")
    if not (folder / "adapter_model.safetensors").is_file():
        if (folder / "adapter_model.bin").is_file():
            raise UnsafeFormat(f"{folder} holds a pickled adapter (adapter_model.bin); only safetensors load")
        raise InvalidInput(f"{folder} has no adapter_model.safetensors")
    try:
        config = PeftConfig.from_pretrained(str(folder))
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"bad adapter_config.json in {folder}: {exc}") from exc
    if config.peft_type != "LORA":
        raise InvalidInput(f"only LoRA adapters can be served in mixed batches; {folder} is {config.peft_type}")
    return config


def _strip_tuner_layers(model: torch.nn.Module) -> None:
    """Put back every module PEFT replaced (also after a half-finished injection)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, AuxiliaryTrainingWrapper):
            original = module.original_module
        elif isinstance(module, BaseTunerLayer):
            original = module.get_base_layer()
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, original)
    if hasattr(model, "peft_config"):
        del model.peft_config
