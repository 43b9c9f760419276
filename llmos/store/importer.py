"""Import models into the store: Hugging Face folders, single safetensors files, GGUF files.

Pickle-based weights are refused unless the caller explicitly allows them; then they are loaded
once (weights only) and stored as safetensors, so nothing in the store is ever a pickle.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmos.errors import Conflict, ImportFailed, UnsafeFormat
from llmos.store.formats import (
    PICKLE_SUFFIXES, WeightsSummary, check_gguf, check_safetensors, gguf_summary, read_json, tasks_for,
)
from llmos.store.manifest import FileEntry, Lineage, ManifestData, ModelInfo
from llmos.store.names import key_of, parse_ref
from llmos.store.progress import NullProgress, Progress
from llmos.store.registry import Registry

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json",
                   "chat_template.jinja", "generation_config.json")


@dataclass
class ImportOptions:
    license: str | None = None
    source: str | None = None
    allow_pickle: bool = False
    config: Path | None = None  # config.json for a single safetensors file
    parent: str | None = None  # base model ref, for adapters
    lineage: Lineage = field(default_factory=Lineage)
    replace: bool = False
    tenant: str | None = None
    # Manifest fields that override what the folder says: a trainer knows what its result serves
    # (a prompt-tuned classifier head over an encoder base: tasks ["classify"], its labels).
    overrides: dict[str, Any] = field(default_factory=dict)
    # Which engine serves the model: "llamacpp" or "hf"; None: llama.cpp for a GGUF, hf for a folder.
    engine: str | None = None


class Importer:
    def __init__(self, registry: Registry, tmp: Path) -> None:
        self.registry = registry
        self.tmp = tmp

    def import_path(self, path: str | Path, ref: str, opts: ImportOptions | None = None,
                    progress: Progress | None = None) -> ModelInfo:
        """Import a folder, a .safetensors file or a .gguf file as ``ref``."""
        opts = opts or ImportOptions()
        progress = progress or NullProgress()
        parse_ref(ref)
        src = _existing(path)
        with self.registry.name_lock(parse_ref(ref).name, wait=False):
            if self.registry.find_key(key_of(opts.tenant, parse_ref(ref))) is not None and not opts.replace:
                raise Conflict(f"model {parse_ref(ref)} already exists; remove it first or choose another tag")
            return self.import_unlocked(src, ref, opts, progress)

    def import_unlocked(self, src: Path, ref: str, opts: ImportOptions, progress: Progress) -> ModelInfo:
        """Import without taking the name lock: the caller holds it."""
        if src.is_dir():
            return self._folder(src, ref, opts, progress)
        suffix = src.suffix.lower()
        if suffix == ".gguf":
            return self._gguf(src, ref, opts, progress)
        if suffix == ".safetensors":
            return self._single(src, ref, opts, progress)
        if suffix in PICKLE_SUFFIXES:
            raise UnsafeFormat(_pickle_message(src.name) + " Import its folder (with config.json) instead.")
        raise ImportFailed(f"{src.name}: unknown model format; import a folder, a .safetensors or a .gguf file")

    # -- folders ---------------------------------------------------------------------------------
    def _folder(self, src: Path, ref: str, opts: ImportOptions, progress: Progress) -> ModelInfo:
        adapter = (src / "adapter_config.json").is_file()
        if not adapter and not (src / "config.json").is_file():
            raise ImportFailed(f"{src}: no config.json; a model folder needs its config (and tokenizer files)")
        weights = sorted(src.rglob("*.safetensors"))
        if not weights and not adapter and opts.engine == "llamacpp" and any(src.glob("*.gguf")):
            return self._gguf_folder(src, ref, opts, progress)
        pickles = [p for p in src.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES and p.is_file()]
        if not weights and pickles:
            if not opts.allow_pickle:
                raise UnsafeFormat(_pickle_message(pickles[0].name))
            return self._convert_pickles(src, ref, opts, progress)
        if not weights:
            raise ImportFailed(f"{src}: no weights (*.safetensors) found")
        summary = WeightsSummary()
        for w in weights:
            summary.add(check_safetensors(w))
        files = [p for p in _walk(src) if p.suffix.lower() not in PICKLE_SUFFIXES]
        meta = {**self._metadata(src, adapter, summary, opts), **opts.overrides}
        if not adapter:
            meta["engines"] = _engines(src, opts.engine)
        return self._store(src, files, ref, meta, opts, progress)

    def _gguf_folder(self, src: Path, ref: str, opts: ImportOptions, progress: Progress) -> ModelInfo:
        """A GGUF with its config and tokenizer files and no safetensors (a quantised model):
        stored for llama.cpp alone."""
        found = sorted(src.glob("*.gguf"))
        if len(found) != 1:
            raise ImportFailed(f"{src}: expected one .gguf file, found {len(found)}")
        check_llamacpp_architecture(found[0], str(check_gguf(found[0])["architecture"]))
        meta = {**self._metadata(src, False, gguf_summary(found[0]), opts), **opts.overrides}
        meta["engines"] = ["llamacpp"]
        return self._store(src, _walk(src), ref, meta, opts, progress)

    def _metadata(self, src: Path, adapter: bool, summary: WeightsSummary, opts: ImportOptions) -> dict[str, Any]:
        if adapter:
            return self._adapter_metadata(src, summary, opts)
        config = read_json(src / "config.json")
        tasks = tasks_for(config)
        labels = _labels(config) if {"classify", "tag"} & set(tasks) else []
        archs = config.get("architectures") or [config.get("model_type", "unknown")]
        return dict(kind="model", architecture=str(archs[0]), model_type=config.get("model_type"),
                    tasks=tasks, parameters=summary.parameters, dtype=summary.dtype,
                    context_length=config.get("max_position_embeddings"), labels=labels,
                    chat_template=_chat_template(src), license=opts.license or _readme_license(src),
                    parent=self._parent(opts.parent, opts.tenant))

    def _adapter_metadata(self, src: Path, summary: WeightsSummary, opts: ImportOptions) -> dict[str, Any]:
        if not opts.parent:
            raise ImportFailed(f"{src}: a PEFT adapter needs its base model: pass the base's name (--base)")
        base = self.registry.get(opts.parent, tenant=opts.tenant)
        cfg = read_json(src / "adapter_config.json")
        return dict(kind="adapter", architecture=str(cfg.get("peft_type", "LORA")).lower(),
                    model_type=base.manifest.model_type, tasks=base.manifest.tasks,
                    parameters=summary.parameters, dtype=summary.dtype,
                    context_length=base.manifest.context_length, labels=base.manifest.labels,
                    chat_template=_chat_template(src) or base.manifest.chat_template,
                    license=opts.license or base.manifest.license, parent=self._parent(opts.parent, opts.tenant))

    def _parent(self, parent: str | None, tenant: str | None) -> str | None:
        """``name:tag@digest`` of the parent, read in the new model's namespace (where it is read back)."""
        if not parent:
            return None
        base = self.registry.get(parent, tenant=tenant)
        return f"{base.ref}@{base.digest}"

    def _store(self, src: Path, files: list[Path], ref: str, meta: dict[str, Any], opts: ImportOptions,
               progress: Progress) -> ModelInfo:
        total = sum(p.stat().st_size for p in files)
        entries: list[FileEntry] = []
        with self.registry.store_lock(exclusive=False):
            progress.start(f"storing {parse_ref(ref)}", total)
            for p in files:
                digest, size = self.registry.blobs.put_file(p, progress.advance)
                entries.append(FileEntry(path=p.relative_to(src).as_posix(), digest=digest, size=size))
            progress.finish()
            manifest = ManifestData(files=entries, size_bytes=total, lineage=opts.lineage,
                                    source=opts.source or f"file:{src}", **meta)
            return self.registry.add(ref, manifest, replace=opts.replace, tenant=opts.tenant)

    # -- single files ----------------------------------------------------------------------------
    def _single(self, src: Path, ref: str, opts: ImportOptions, progress: Progress) -> ModelInfo:
        config = opts.config or src.parent / "config.json"
        if not config.is_file():
            raise ImportFailed(f"{src.name}: a single safetensors file needs its config.json "
                               "(beside it, or given with --config)")
        with self._staging("single-") as stage:
            os.symlink(src.resolve(), stage / "model.safetensors")
            os.symlink(config.resolve(), stage / "config.json")
            for name in TOKENIZER_FILES:
                if (src.parent / name).is_file():
                    os.symlink((src.parent / name).resolve(), stage / name)
            opts.source = opts.source or f"file:{src}"
            return self._folder(stage, ref, opts, progress)

    def _gguf(self, src: Path, ref: str, opts: ImportOptions, progress: Progress) -> ModelInfo:
        meta = check_gguf(src)
        if opts.engine != "hf":  # the quantised file itself is kept for llama.cpp, beside the conversion
            check_llamacpp_architecture(src, str(meta["architecture"]))
        with self._staging("gguf-") as stage:
            progress.start(f"converting {src.name} to safetensors", None)
            convert_gguf(src, stage)
            progress.finish()
            if opts.engine != "hf":
                os.symlink(src.resolve(), stage / GGUF_NAME)
            opts.source = opts.source or f"gguf:{src}"
            return self._folder(stage, ref, opts, progress)

    def _convert_pickles(self, src: Path, ref: str, opts: ImportOptions, progress: Progress) -> ModelInfo:
        with self._staging("pickle-") as stage:
            progress.start(f"converting pickle weights in {src.name} to safetensors", None)
            convert_pickle_folder(src, stage)
            progress.finish()
            opts.source = opts.source or f"pickle:{src}"
            opts.lineage = opts.lineage.with_(converted_from="pickle")
            return self._folder(stage, ref, opts, progress)

    @contextmanager
    def _staging(self, prefix: str) -> Iterator[Path]:
        stage = Path(tempfile.mkdtemp(dir=self.tmp, prefix=prefix))
        try:
            yield stage
        finally:
            shutil.rmtree(stage, ignore_errors=True)


GGUF_NAME = "model.gguf"


def _engines(src: Path, wanted: str | None) -> list[str]:
    """Engine kinds for a model folder about to be stored, preferred first."""
    has_gguf = any(src.glob("*.gguf"))
    if wanted == "llamacpp" and not has_gguf:
        raise ImportFailed(f"{src.name}: the llama.cpp engine needs a GGUF file; import the .gguf, or use --engine hf")
    if wanted not in (None, "hf", "llamacpp"):
        raise ImportFailed(f"unknown engine {wanted!r}; choose llamacpp or hf")
    return ["llamacpp", "hf"] if has_gguf and wanted != "hf" else ["hf"]


def check_llamacpp_architecture(src: Path, arch: str) -> None:
    import gguf

    if arch not in {str(a) for a in gguf.MODEL_ARCH_NAMES.values()}:
        raise ImportFailed(f"{src.name}: llama.cpp does not know the architecture {arch!r}; "
                           "import it with --engine hf if transformers can load it")


def convert_gguf(src: Path, out: Path) -> None:
    """Dequantise a GGUF model through transformers and save it as safetensors with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds on unsupported files
        raise ImportFailed(f"{src.name}: transformers cannot load this GGUF ({type(exc).__name__}: {exc})") from None
    # The loaded weights are plain dequantised tensors; the quantizer only blocks saving them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)


def convert_pickle_folder(src: Path, out: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(src)
    model_cls = _auto_class(config)
    try:
        model = model_cls.from_pretrained(src, use_safetensors=False)
    except Exception as exc:  # noqa: BLE001
        raise ImportFailed(f"{src}: cannot load its pickle weights ({type(exc).__name__}: {exc})") from None
    model.save_pretrained(out)
    try:
        AutoTokenizer.from_pretrained(src).save_pretrained(out)
    except (OSError, ValueError):
        pass  # a model without a tokenizer is still importable


def _auto_class(config: Any) -> Any:
    import transformers

    tasks = tasks_for(config.to_dict())
    name = {"generate": "AutoModelForCausalLM", "classify": "AutoModelForSequenceClassification",
            "tag": "AutoModelForTokenClassification"}.get(tasks[0], "AutoModel")
    return getattr(transformers, name)


def _existing(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise ImportFailed(f"{p}: no such file or folder")
    return p.absolute()  # not resolve(): a linked file's own folder holds its config


def _walk(src: Path) -> list[Path]:
    out = []
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        out.append(p)
    return out


def _labels(config: dict[str, Any]) -> list[str]:
    id2label = config.get("id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))]


def _chat_template(src: Path) -> str | None:
    jinja = src / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    tc = src / "tokenizer_config.json"
    if tc.is_file():
        value = read_json(tc).get("chat_template")
        return value if isinstance(value, str) else None
    return None


def _readme_license(src: Path) -> str | None:
    readme = src / "README.md"
    if not readme.is_file():
        return None
    for line in readme.read_text(encoding="utf-8", errors="replace").splitlines()[:40]:
        if line.lower().startswith("license:"):
            return line.split(":", 1)[1].strip() or None
    return None


def _pickle_message(name: str) -> str:
    return (f"{name}: pickle-based weights can run arbitrary code when loaded, so llmos refuses them. "
            "Convert the model to safetensors, or pass --allow-pickle if you trust its source.")
