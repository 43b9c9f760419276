"""Engine backends by name, and loading a stored model (or adapter over its base) into one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llmos.engines.base import Engine
from llmos.errors import InvalidInput
from llmos.store.manifest import ModelInfo
from llmos.store.registry import Registry

EngineFactory = Callable[..., Engine]
ENGINES: dict[str, EngineFactory] = {}


def register_engine(name: str, factory: EngineFactory) -> None:
    ENGINES[name] = factory


def _hf_engine(path: Path, **kwargs: object) -> Engine:
    from llmos.engines.hf import HFEngine  # torch and transformers load only when a model does

    return HFEngine(path, **kwargs)  # type: ignore[arg-type]


register_engine("hf", _hf_engine)


def base_of(registry: Registry, info: ModelInfo) -> ModelInfo:
    """The full-weights model an adapter sits on (the model itself if it is not an adapter)."""
    if info.manifest.kind != "adapter":
        return info
    if not info.manifest.parent:
        raise InvalidInput(f"adapter {info.ref} has no base model recorded")
    return registry.get(info.manifest.parent.split("@", 1)[0])


def load_engine(registry: Registry, ref: str, *, backend: str = "hf", **options: object) -> Engine:
    """Load ``ref`` into a new engine; for an adapter, load its base and attach the adapter."""
    if backend not in ENGINES:
        raise InvalidInput(f"unknown engine backend {backend!r}; available: {', '.join(sorted(ENGINES))}")
    info = registry.get(ref)
    base = base_of(registry, info)
    engine = ENGINES[backend](registry.snapshot(base), name=base.ref, tasks=base.manifest.tasks,
                              chat_template=base.manifest.chat_template, **options)
    if base is not info:
        engine.add_adapter(info.ref, str(registry.snapshot(info)))
    return engine
