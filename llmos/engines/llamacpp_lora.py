"""PEFT LoRA adapters as llama.cpp LoRA GGUF files (what llama.cpp's ``convert_lora_to_gguf.py`` writes).

A LoRA GGUF is metadata (``general.type`` adapter, ``adapter.type`` lora, ``adapter.lora.alpha``)
plus two tensors per adapted weight, named after the base GGUF's tensor with ``.lora_a`` / ``.lora_b``
appended. PyTorch's A [r, in] and B [out, r] are written as they are: GGUF stores shapes reversed,
which gives the ggml shapes llama.cpp checks against the base weight (ne [in, out]).

Two things the HF -> GGUF conversion did to the base weights must be done to the adapter too:
for the ``llama`` architecture the query and key projections were permuted (the rotary layout
llama.cpp uses), so their B matrices get the same row permutation; and llama.cpp scales every
tensor by alpha / rank, so any other PEFT scaling (rsLoRA, per-module rank or alpha) is folded
into B. What llama.cpp cannot express (other PEFT methods, DoRA, biases, fully trained modules,
targets without a GGUF tensor) is named by ``unsupported`` so the request runs on transformers.

Conversion is a pure function of the adapter's files and the base GGUF, so its result is cached
under a name made of their digests (``cached_gguf``): converted once, never stale.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos.engines.gguf_tensors import ARCHITECTURES, mapped_name, permute
from llmos.engines.llamacpp_server import arch_number
from llmos.errors import InvalidInput

_WEIGHTS = ("adapter_model.safetensors",)


@dataclass(frozen=True)
class BaseShape:
    """What the conversion needs from the base GGUF."""

    architecture: str
    layers: int
    heads: int
    kv_heads: int
    tensors: dict[str, tuple[int, ...]]  # GGUF tensor name -> PyTorch-order shape (out, in)


def read_base(gguf_path: Path) -> BaseShape:
    from gguf import GGUFReader

    reader = GGUFReader(gguf_path)
    arch = str(reader.fields["general.architecture"].contents())

    def num(key: str, default: int = 0) -> int:
        return arch_number(reader, arch, key, default)

    heads = num("attention.head_count")
    tensors = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}
    return BaseShape(arch, num("block_count"), heads, num("attention.head_count_kv", heads), tensors)


def read_config(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{folder.name}: no readable adapter_config.json ({exc})") from None


def unsupported(config: dict[str, Any], architecture: str) -> str | None:
    """Why llama.cpp cannot serve this PEFT adapter over a base of ``architecture`` (None: it can)."""
    method = str(config.get("peft_type", "")).upper()
    if method != "LORA":
        return f"{method.lower() or 'this'} adapters"
    if architecture not in ARCHITECTURES:
        return f"LoRA adapters over {architecture!r} models"
    for flag, what in (("use_dora", "DoRA adapters"), ("modules_to_save", "adapters with fully trained modules"),
                       ("trainable_token_indices", "adapters with trained token embeddings")):
        if config.get(flag):
            return what
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        return "LoRA adapters with biases"
    return None


def _scale(config: dict[str, Any], module: str, rank: int) -> float:
    """PEFT's scaling of ``module`` (alpha / r, or alpha / sqrt(r) under rsLoRA; per-module patterns)."""
    alpha = _pattern(config.get("alpha_pattern"), module, float(config.get("lora_alpha", 8)))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _pattern(patterns: dict[str, Any] | None, module: str, default: float) -> float:
    for key, value in (patterns or {}).items():
        if module == key or module.endswith("." + key):
            return float(value)
    return default


def convert(folder: Path, base_gguf: Path, out: Path, *, adapter: str = "", base: BaseShape | None = None) -> int:
    """Write ``folder``'s PEFT LoRA as a llama.cpp LoRA GGUF at ``out``; returns the adapted tensors.

    InvalidInput when llama.cpp cannot serve it or it does not fit the base (a shape that differs
    names the tensor, both shapes and the base file)."""
    from gguf import GGUFType, GGUFWriter, Keys

    config, shape = read_config(folder), base or read_base(base_gguf)
    label = adapter or folder.name
    reason = unsupported(config, shape.architecture)
    if reason is not None:
        raise InvalidInput(f"adapter {label}: llama.cpp cannot serve {reason}")
    pairs = _pairs(folder, label)
    alpha = float(config.get("lora_alpha", 8))
    writer = GGUFWriter(out, shape.architecture)
    writer.add_type(GGUFType.ADAPTER)
    writer.add_string(Keys.Adapter.TYPE, "lora")
    writer.add_float32(Keys.Adapter.LORA_ALPHA, alpha)
    for module, (a, b) in sorted(pairs.items()):
        name = _target(module, shape, label)
        a, b = a.astype("float32"), b.astype("float32") * (_scale(config, module, a.shape[0]) / (alpha / a.shape[0]))
        _check_fit(label, name, a, b, shape, base_gguf)
        if ARCHITECTURES[shape.architecture] and name.endswith((".attn_q.weight", ".attn_k.weight")):
            b = permute(b, shape.heads if ".attn_q." in name else shape.kv_heads)
        writer.add_tensor(name + ".lora_a", a)
        writer.add_tensor(name + ".lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return len(pairs)


def _pairs(folder: Path, label: str) -> dict[str, tuple[Any, Any]]:
    from safetensors.numpy import load_file

    weights = next((folder / w for w in _WEIGHTS if (folder / w).is_file()), None)
    if weights is None:
        raise InvalidInput(f"adapter {label}: no adapter_model.safetensors (pickled adapters are not converted)")
    tensors = load_file(weights)
    pairs: dict[str, tuple[Any, Any]] = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        b = tensors.get(key.replace(".lora_A.", ".lora_B."))
        if b is None:
            raise InvalidInput(f"adapter {label}: {module} has lora_A but no lora_B")
        pairs[module] = (a, b)
    extra = [k for k in tensors if ".lora_A." not in k and ".lora_B." not in k]
    if extra or not pairs:
        raise InvalidInput(f"adapter {label}: llama.cpp serves LoRA pairs only (found: {(extra or ['none'])[0]})")
    return pairs


def _target(module: str, shape: BaseShape, label: str) -> str:
    name = mapped_name(module + ".weight", shape.layers, shape.architecture)
    if name is None or name not in shape.tensors:
        raise InvalidInput(f"adapter {label}: llama.cpp has no tensor for {module} in this {shape.architecture} model")
    return name


def _check_fit(label: str, name: str, a: Any, b: Any, shape: BaseShape, base_gguf: Path) -> None:
    want = shape.tensors[name]
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] or (b.shape[0], a.shape[1]) != want:
        raise InvalidInput(f"adapter {label} does not match its base {base_gguf.name}: {name} is "
                           f"{list(want)} there, the adapter's B x A is {[b.shape[0], a.shape[1]]}")


def digest_of(folder: Path, base_gguf: Path) -> str:
    """A name for the conversion of ``folder`` over ``base_gguf``: the adapter's bytes, and the base by
    its resolved file (store blobs are named by their content) and size."""
    h = hashlib.sha256()
    for rel in ("adapter_config.json", *_WEIGHTS):
        path = folder / rel
        if path.is_file():
            h.update(rel.encode() + b"\0" + path.read_bytes())
    real = base_gguf.resolve()
    h.update(f"{real}\0{real.stat().st_size}".encode())
    return h.hexdigest()


def cached_gguf(folder: Path, base_gguf: Path, cache: Path, *, adapter: str = "") -> Path:
    """The LoRA GGUF for ``folder`` over ``base_gguf`` in ``cache``, converted on first use (written to a
    temporary file and renamed, so a reader never sees half a file)."""
    final = cache / f"{digest_of(folder, base_gguf)}.gguf"
    if final.is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".lora-", suffix=".tmp")
    os.close(fd)
    try:
        convert(folder, base_gguf, Path(tmp), adapter=adapter)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return final
