"""Loading a local transformers model folder: which head, which tasks, which tokens end a turn.

Only local folders of safetensors load (``local_files_only``: the hub is never asked), with remote
code off: a model folder is data the store checked, never code to run.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PretrainedConfig,
)
from transformers.cache_utils import DynamicCache, DynamicLayer

from llmos.errors import EngineFailed, InvalidInput, UnsafeFormat, WrongTask

# Which tasks each kind of head serves. A classification head also embeds through its encoder.
KIND_TASKS: dict[str, tuple[str, ...]] = {
    "causal": ("generate",),
    "classify": ("classify", "embed"),
    "tag": ("tag", "embed"),
    "encoder": ("embed",),
}
_AUTO_CLASSES = {
    "causal": AutoModelForCausalLM,
    "classify": AutoModelForSequenceClassification,
    "tag": AutoModelForTokenClassification,
    "encoder": AutoModel,
}
_ARCH_SUFFIXES = (
    ("ForCausalLM", "causal"),
    ("ForSequenceClassification", "classify"),
    ("ForTokenClassification", "tag"),
)
# Turn-ending tokens chat models emit without always declaring them in generation_config.
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<end_of_turn>", "<|end|>")
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_DEFAULT_CONTEXT = 2048


@dataclass
class LoadedModel:
    """Everything the engine needs from a model folder, resolved once at load time."""

    model: torch.nn.Module
    tokenizer: object  # a fast tokenizer (offsets are needed for tag)
    kind: str  # a key of KIND_TASKS
    tasks: list[str]
    context_length: int
    labels: list[str]
    eos_ids: frozenset[int]
    chat_template: str | None
    max_input_len: int  # truncation length for embed / classify / tag


def load_model(
    path: str | Path, *, tasks: list[str] | None, chat_template: str | None, dtype: str, device: torch.device
) -> LoadedModel:
    folder = _check_folder(Path(path))
    config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    kind = resolve_kind(config, tasks)
    model = _load_weights(folder, kind, parse_dtype(dtype), device)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    if kind == "causal":
        _check_cache_layout(config)
    context = context_length(config)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        kind=kind,
        tasks=list(tasks) if tasks else list(KIND_TASKS[kind]),
        context_length=context,
        labels=_labels(config) if kind in ("classify", "tag") else [],
        eos_ids=eos_ids(model, tokenizer) if kind == "causal" else frozenset(),
        chat_template=chat_template or getattr(tokenizer, "chat_template", None),
        max_input_len=min(context, _sentence_max_len(folder) or context),
    )


def _check_folder(folder: Path) -> Path:
    if not (folder / "config.json").is_file():
        raise InvalidInput(f"{folder} is not a model folder (no config.json)")
    if not any(folder.glob("*.safetensors")):
        if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
            raise UnsafeFormat(f"{folder} holds pickled weights; only safetensors are loaded")
        raise InvalidInput(f"{folder} has no .safetensors weights")
    return folder


def resolve_kind(config: PretrainedConfig, tasks: list[str] | None) -> str:
    """The head to load: from the architecture name, or from the tasks when that says nothing."""
    arch = (getattr(config, "architectures", None) or [""])[0]
    kind = next((k for suffix, k in _ARCH_SUFFIXES if arch.endswith(suffix)), None)
    if kind is None and arch.endswith("Model"):
        kind = "encoder"
    if kind is None:
        kind = next((k for k, can in KIND_TASKS.items() if tasks and set(tasks) <= set(can)), None)
    if kind is None:
        raise WrongTask(f"cannot tell what architecture {arch or '(none)'} does; pass tasks=[...]")
    unknown = set(tasks or ()) - set(KIND_TASKS[kind])
    if unknown:
        raise WrongTask(
            f"a {arch or kind} model cannot {', '.join(sorted(unknown))}; it can {', '.join(KIND_TASKS[kind])}",
            tasks=list(KIND_TASKS[kind]),
        )
    return kind


def cache_kwarg(model: torch.nn.Module) -> str:
    """The name under which ``model``'s forward pass takes its KV cache: ``cache`` in the transformers
    releases that renamed it, ``past_key_values`` before (a wrong name is swallowed by ``**kwargs`` and
    the cache stays empty, so it is read off the signature, not guessed from the version)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def parse_dtype(dtype: str) -> torch.dtype:
    if dtype not in _DTYPES:
        raise InvalidInput(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]


def _load_weights(folder: Path, kind: str, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    try:
        model = _AUTO_CLASSES[kind].from_pretrained(
            folder, dtype=dtype, use_safetensors=True, local_files_only=True, trust_remote_code=False
        )
        return model.to(device).eval()
    except (OSError, ValueError, RuntimeError, KeyError, AssertionError) as exc:
        # AssertionError: torch asked for a device it was not built for ("cuda" on a CPU build).
        raise EngineFailed(f"could not load the {kind} model in {folder} onto {device}: {exc}") from exc


def _check_cache_layout(config: PretrainedConfig) -> None:
    layers = DynamicCache(config=config).layers
    if any(type(layer) is not DynamicLayer for layer in layers):
        raise WrongTask("this engine batches full-attention models only; the model uses sliding or linear layers")


def context_length(config: PretrainedConfig) -> int:
    text = config.get_text_config()
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return _DEFAULT_CONTEXT


def _labels(config: PretrainedConfig) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    return [id2label[i] for i in sorted(id2label, key=int)]


def eos_ids(model: torch.nn.Module, tokenizer) -> frozenset[int]:
    """Every token that ends a generation: declared ones plus known end-of-turn markers."""
    ids: set[int] = set()
    gen_config = getattr(model, "generation_config", None)
    for value in (getattr(gen_config, "eos_token_id", None), tokenizer.eos_token_id):
        ids.update(value if isinstance(value, list) else [value] if value is not None else [])
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in _END_OF_TURN if t in vocab)
    return frozenset(ids)


def _sentence_max_len(folder: Path) -> int | None:
    """sentence-transformers folders state the length the embedding was trained for."""
    try:
        value = json.loads((folder / "sentence_bert_config.json").read_text()).get("max_seq_length")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, int) and value > 0 else None
