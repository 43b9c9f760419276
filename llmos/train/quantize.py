"""``llmos models quantize NAME``: a stored Hugging Face Llama model as a quantised GGUF for llama.cpp.

The source is a full model (the built-in's fp32 copy, a full fine-tune) read from its safetensors, or
a LoRA adapter merged into its base in memory (``merge_and_unload``). The GGUF's metadata is copied
from the nearest ancestor stored with a GGUF that describes the same model (same hyperparameters and
vocabulary: the built-in SmolLM2's own file), else built from the HF config and tokenizer. The file is
written into a staging folder beside its config, tokenizer files and chat template, and imported from
there as a new model version served by llama.cpp alone; a failure leaves nothing registered.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from llmos.engines.gguf_quantize import (
    HF_CLASSES, FolderWeights, HfModel, QuantType, StateDictWeights, quant_type, read_config, template_mismatch,
    unsupported, write_gguf,
)
from llmos.errors import Conflict, InvalidInput, NotFound
from llmos.store.importer import GGUF_NAME, TOKENIZER_FILES, Importer, ImportOptions
from llmos.store.manifest import Lineage, LineageBase, ModelInfo, is_prompt_task
from llmos.store.names import DEFAULT_TENANT, parse_ref
from llmos.store.progress import NullProgress, Progress
from llmos.store.registry import Registry

ANCESTORS = 8  # how far up the parent chain a GGUF to copy metadata from is looked for
SUPPORTED = f"stored Hugging Face causal LMs of the Llama architecture ({', '.join(HF_CLASSES)}) and LoRA adapters over them"


def quantize_model(registry: Registry, importer: Importer, ref: str, *, type_name: str = "q8_0",
                   target: str | None = None, tenant: str | None = DEFAULT_TENANT,
                   progress: Progress | None = None) -> ModelInfo:
    """Quantise ``ref`` (read in ``tenant``'s namespace) as ``type_name`` and register the GGUF as
    ``target`` (default ``NAME-TYPE:TAG``) in that namespace."""
    qt = quant_type(type_name)
    info = registry.get(ref, tenant=tenant)
    _check_source(registry, info)
    new = parse_ref(target or f"{info.name}-{qt.name}:{info.tag}")
    if registry.find(new, tenant=tenant) is not None:
        raise Conflict(f"model {new} already exists; remove it first or choose another name with --as",
                       param="as")
    progress = progress or NullProgress()
    # A shared store lock while the staging folder lives: a process starting meanwhile cleans tmp/ only
    # under the exclusive one.
    with registry.store_lock(exclusive=False):
        stage = Path(tempfile.mkdtemp(dir=importer.tmp, prefix="quantize-"))
        try:
            model, folder = _source(registry, info)
            template, metadata_from = _template(registry, info, model)
            write_gguf(model, stage / GGUF_NAME, qt, template=template, progress=progress)
            _stage_files(folder, stage, info)
            opts = ImportOptions(engine="llamacpp", tenant=tenant, parent=info.ref, license=info.manifest.license,
                                 source=f"quantize:{info.ref}@{info.digest}",
                                 lineage=_lineage(info, qt, metadata_from))
            return importer.import_path(stage, str(new), opts, progress)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _check_source(registry: Registry, info: ModelInfo) -> None:
    """InvalidInput naming what is supported, for anything that is not a Llama causal LM or a LoRA on one."""
    if is_prompt_task(info):
        raise InvalidInput(f"{info.ref} is a prompt task (no weights of its own); quantize its base. "
                           f"Supported: {SUPPORTED}", param="model")
    if info.manifest.kind == "adapter":
        if info.manifest.architecture != "lora":
            raise InvalidInput(f"{info.ref} is a {info.manifest.architecture} adapter, which cannot be merged "
                               f"into weights. Supported: {SUPPORTED}", param="model")
        return _check_source(registry, registry.parent(info))
    if not any(f.path.endswith(".safetensors") for f in info.manifest.files):
        raise InvalidInput(f"{info.ref} is stored as a GGUF file only; quantize the model it was made from",
                           param="model")
    if info.manifest.architecture not in HF_CLASSES or "generate" not in info.manifest.tasks:
        raise InvalidInput(f"{info.ref} is a {info.manifest.architecture} model ({', '.join(info.manifest.tasks)}); "
                           f"supported: {SUPPORTED}", param="model")


def _source(registry: Registry, info: ModelInfo) -> tuple[HfModel, Path]:
    """The model to write and the folder holding its config and tokenizer."""
    if info.manifest.kind == "adapter":
        from llmos.train.loading import load_trained

        base = registry.parent(info)
        folder = registry.snapshot(base)
        merged = load_trained(registry, info.key).model.merge_and_unload()
        weights: FolderWeights | StateDictWeights = StateDictWeights(merged.state_dict())
    else:
        folder = registry.snapshot(info)
        weights = FolderWeights(folder)
    config = read_config(folder)
    reason = unsupported(config)
    if reason is not None:
        raise InvalidInput(f"{info.ref} cannot be quantised: {reason}. Supported: {SUPPORTED}", param="model")
    return HfModel(info.ref, config, weights, folder, info.manifest.chat_template), folder


def _template(registry: Registry, info: ModelInfo, model: HfModel) -> tuple[Path | None, str]:
    """The nearest GGUF among ``info`` and its ancestors whose metadata fits ``model``, and where the
    metadata comes from (``name:tag@digest``, or ``hf`` when it is built from the config and tokenizer)."""
    current: ModelInfo | None = info
    for _ in range(ANCESTORS):
        if current is None:
            break
        gguf = next((f.path for f in current.manifest.files if f.path.endswith(".gguf")), None)
        if gguf is not None:
            path = registry.snapshot(current) / gguf
            if template_mismatch(path, model) is None:
                return path, f"{current.ref}@{current.digest}"
        current = _parent(registry, current)
    return None, "hf"


def _parent(registry: Registry, info: ModelInfo) -> ModelInfo | None:
    if not info.manifest.parent:
        return None
    try:
        return registry.parent(info)
    except NotFound:  # removed since: nothing further up to copy from
        return None


def _stage_files(folder: Path, stage: Path, info: ModelInfo) -> None:
    """config.json and the tokenizer files beside the GGUF (the kernel tokenises with them)."""
    for name in ("config.json", *TOKENIZER_FILES):
        if (folder / name).is_file():
            os.symlink((folder / name).resolve(), stage / name)
    if info.manifest.chat_template:
        (stage / "chat_template.jinja").unlink(missing_ok=True)
        (stage / "chat_template.jinja").write_text(info.manifest.chat_template, encoding="utf-8")


def _lineage(info: ModelInfo, qt: QuantType, metadata_from: str) -> Lineage:
    return Lineage(base=LineageBase(ref=info.ref, digest=info.digest), method="quantize",
                   description=f"{info.ref} quantised to {qt.name} for llama.cpp").with_(
        quantization={"type": qt.name, "metadata_from": metadata_from})
