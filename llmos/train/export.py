"""``llmos models export NAME DIR``: a stored model as a plain Hugging Face folder.

Full models are copied file by file (real files, not links into the store); a LoRA adapter is merged
into its base (``merge_and_unload``) and saved with the tokenizer. Either way the folder carries the
chat template stored with the model (``chat_template.jinja``), so whatever loads it prompts the model
the way it was trained. Prompt-learning adapters cannot be merged into weights: export refuses them.
The folder is written beside ``DIR`` and renamed into place, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from llmos.errors import Conflict, InvalidInput
from llmos.store.manifest import ModelInfo
from llmos.store.names import DEFAULT_TENANT
from llmos.store.registry import Registry

TEMPLATE_FILE = "chat_template.jinja"


def export_model(registry: Registry, ref: str, out: Path, *, tenant: str | None = DEFAULT_TENANT) -> Path:
    """Write ``ref`` to the new folder ``out``; returns it."""
    info = registry.get(ref, tenant=tenant)
    out = out.expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise Conflict(f"{out} exists and is not an empty folder; choose a new one", param="dir")
    if info.manifest.kind == "adapter" and info.manifest.architecture != "lora":
        raise InvalidInput(f"{info.ref} is a {info.manifest.architecture} adapter: its virtual tokens cannot be "
                           "merged into the base's weights, so there is no plain model folder to export")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        if info.manifest.kind == "adapter":
            _merge(registry, info, stage)
        else:
            _copy(registry.snapshot(info), stage)
        if info.manifest.chat_template:
            (stage / TEMPLATE_FILE).write_text(info.manifest.chat_template, encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


def _copy(snapshot: Path, stage: Path) -> None:
    for src in snapshot.rglob("*"):
        if src.is_file():
            dst = stage / src.relative_to(snapshot)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src.resolve(), dst)


def _merge(registry: Registry, info: ModelInfo, stage: Path) -> None:
    from llmos.train.loading import load_trained

    loaded = load_trained(registry, info.key)
    merged = loaded.model.merge_and_unload()
    merged.save_pretrained(stage, safe_serialization=True)
    if info.manifest.chat_template:
        loaded.tokenizer.chat_template = info.manifest.chat_template
    loaded.tokenizer.save_pretrained(stage)
