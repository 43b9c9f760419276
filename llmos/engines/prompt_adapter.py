"""Prompt-learning adapters (prompt tuning, prefix tuning) served by an engine of their own.

Such an adapter adds virtual tokens to every input it sees, so its rows cannot share a forward pass
with rows for the base or for LoRA adapters. ``loader.base_of`` therefore names the adapter itself as
the model that runs (its own worker and batch), and ``load_prompt_adapter`` builds that engine: the
base's weights under the head the adapter was trained with (the head class from the adapter's task,
the labels from its manifest), wrapped by ``PeftModel.from_pretrained``, which restores the trained
virtual tokens and head.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmos.engines.hf import HFEngine
from llmos.errors import InvalidInput
from llmos.store.manifest import ModelInfo
from llmos.store.registry import Registry

_HEAD_MAPPINGS = {"classify": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
                  "tag": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"}


class PromptAdapterEngine(HFEngine):
    """An HFEngine whose model is the base wrapped by one prompt-learning adapter; it takes no others."""

    def __init__(self, path: str | Path, *, adapter_path: str | Path, **kwargs: Any) -> None:
        from peft import PeftModel

        from llmos.engines.adapters import AdapterSet

        super().__init__(path, **kwargs)
        try:
            with warnings.catch_warnings():  # PEFT asks transformers a deprecated question while wrapping
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
                peft = PeftModel.from_pretrained(self._m.model, str(adapter_path), is_trainable=False)
        except Exception as exc:
            raise InvalidInput(f"cannot load adapter {kwargs.get('name')!r} from {adapter_path}: {exc}") from exc
        self._m.model = peft.eval()
        self._adapters = AdapterSet(self._m.model, self._device)  # no LoRA routing: the wrapper is the model

    def add_adapter(self, name: str, path: str) -> None:
        raise InvalidInput(f"model {self.name!r} is a prompt-learning adapter; it runs alone, without other adapters")


def load_prompt_adapter(registry: Registry, info: ModelInfo, *, backend: str = "hf", **options: Any) -> HFEngine:
    """The engine for a prompt-learning adapter (see the module docstring)."""
    if backend != "hf":
        raise InvalidInput(f"prompt-learning adapters run on the hf backend only, not {backend!r}")
    base = registry.parent(info)
    task = next((t for t in info.manifest.tasks if t in _HEAD_MAPPINGS), None)
    with _staged_base(registry.snapshot(base), base, task, info.manifest.labels) as folder:
        return PromptAdapterEngine(folder, adapter_path=registry.snapshot(info), name=info.key,
                                   tasks=list(info.manifest.tasks), chat_template=info.manifest.chat_template,
                                   **options)


@contextmanager
def _staged_base(snapshot: Path, base: ModelInfo, task: str | None, labels: list[str]) -> Iterator[Path]:
    """The base's files (linked) with a config naming the adapter's head and labels; removed after loading."""
    if task is None:
        yield snapshot  # a causal LM keeps its own head
        return
    from transformers.models.auto import modeling_auto

    arch = getattr(modeling_auto, _HEAD_MAPPINGS[task]).get(base.manifest.model_type or "")
    if arch is None:
        raise InvalidInput(f"transformers has no {task} head for model type {base.manifest.model_type!r}")
    stage = Path(tempfile.mkdtemp(prefix="prompt-adapter-"))
    try:
        for entry in snapshot.iterdir():
            if entry.name != "config.json":
                os.symlink(entry.resolve(), stage / entry.name)
        config = json.loads((snapshot / "config.json").read_text())
        config.update(architectures=[arch], id2label={str(i): label for i, label in enumerate(labels)},
                      label2id={label: i for i, label in enumerate(labels)})
        (stage / "config.json").write_text(json.dumps(config))
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)
