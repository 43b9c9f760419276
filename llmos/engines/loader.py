"""Engine backends by name, and loading a stored model (or adapter over its base) into one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llmos.engines.base import Engine
from llmos.registry import Registry as NameTable
from llmos.store.manifest import ModelInfo, is_prompt_task
from llmos.store.registry import Registry

EngineFactory = Callable[..., Engine]
ENGINES: NameTable[EngineFactory] = NameTable("engine backend")


def register_engine(name: str, factory: EngineFactory, *, replace: bool = False) -> None:
    ENGINES.register(name, factory, replace=replace)


def _hf_engine(path: Path, **kwargs: object) -> Engine:
    from llmos.engines.hf import HFEngine  # torch and transformers load only when a model does

    return HFEngine(path, **kwargs)  # type: ignore[arg-type]


def _llamacpp_engine(path: Path, **kwargs: object) -> Engine:
    from llmos.engines.llamacpp import LlamaCppEngine  # the binding loads only when a model does

    return LlamaCppEngine(path, **kwargs)  # type: ignore[arg-type]


register_engine("hf", _hf_engine)
register_engine("llamacpp", _llamacpp_engine)


def shares_base(info: ModelInfo) -> bool:
    """Whether ``info`` is an adapter that runs inside its base's engine, in mixed batches (LoRA).

    Prompt-learning adapters (prompt / prefix tuning; manifest architecture ``prompt_tuning``,
    ``prefix_tuning``) prepend virtual tokens to every input, so they cannot share a forward pass:
    each runs on an engine of its own (``llmos.engines.prompt_adapter``).
    """
    return info.manifest.kind == "adapter" and info.manifest.architecture == "lora"


def runs_on(registry: Registry, info: ModelInfo) -> ModelInfo:
    """The stored model whose weights answer for ``info``: a prompt task's base; otherwise ``info``."""
    return registry.parent(info) if is_prompt_task(info) else info


def base_of(registry: Registry, info: ModelInfo) -> ModelInfo:
    """The model whose engine runs ``info``: a LoRA adapter's base, a prompt task's base's engine
    model; otherwise the model itself."""
    info = runs_on(registry, info)
    if not shares_base(info):
        return info
    return registry.parent(info)


def load_engine(registry: Registry, key: str, *, backend: str = "hf", **options: object) -> Engine:
    """Load the model ``key`` (a ``ModelInfo.key``) into a new engine; for an adapter, load its base and
    attach the adapter. Engines and adapters are named by key, unique across tenants."""
    factory = ENGINES.get(backend)  # unknown backends fail here, naming the known ones
    info = runs_on(registry, registry.get_key(key))
    if info.manifest.kind == "adapter" and not shares_base(info):
        from llmos.engines.prompt_adapter import load_prompt_adapter

        return load_prompt_adapter(registry, info, backend=backend, **options)
    base = base_of(registry, info)
    engine = factory(registry.snapshot(base), name=base.key, tasks=base.manifest.tasks,
                              chat_template=base.manifest.chat_template, **options)
    if base is not info:
        engine.add_adapter(info.key, str(registry.snapshot(info)))
    return engine
