"""A Hugging Face Llama causal LM as a quantised GGUF file for llama.cpp, with gguf's own quantisers.

Tensors are renamed and the query / key rows permuted as llama.cpp's ``convert_hf_to_gguf.py`` does
(``gguf_tensors``). Which tensors are quantised follows llama.cpp too: one-dimensional tensors (the
norms) stay F32; a matrix whose rows do not split into the type's blocks falls back to F16 (the
converter's rule); under the 4- and 5-bit types the token embeddings and the output matrix are kept
at Q8_0, which is what llama.cpp's quantiser gives them on a model whose rows are too short for its
K-quants (the built-in SmolLM2 Q4_1 file holds its tied embeddings that way).

Metadata: when the model descends from a GGUF of the same architecture, hyperparameters and vocabulary
(``template_mismatch`` says whether it does), that file's keys are copied as they are (tokenizer,
pre-tokenizer, special ids, hyperparameters) and only the tensors, file type, name and chat template
are new. Otherwise they are built from the HF config and tokenizer with gguf's vocab helpers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from llmos.engines.gguf_tensors import mapped_name, permute, permuted_heads
from llmos.errors import InvalidInput
from llmos.store.progress import NullProgress, Progress

ARCHITECTURE = "llama"  # the GGUF architecture written; its HF class below
HF_CLASSES = ("LlamaForCausalLM",)
# Keys of a template GGUF that describe the file itself, not the model: never copied.
_OWN_KEYS = ("GGUF.", "general.architecture", "general.file_type", "general.quantization_version",
             "general.name", "tokenizer.chat_template")


@dataclass(frozen=True)
class QuantType:
    name: str  # as users type it: q8_0
    qtype: Any  # gguf.GGMLQuantizationType
    file_type: Any  # gguf.LlamaFileType
    low_bit: bool  # 4- and 5-bit: embeddings and output stay Q8_0


def quant_types() -> dict[str, QuantType]:
    from gguf import GGMLQuantizationType as Q, LlamaFileType as F

    return {t.name: t for t in (
        QuantType("q8_0", Q.Q8_0, F.MOSTLY_Q8_0, False), QuantType("q4_0", Q.Q4_0, F.MOSTLY_Q4_0, True),
        QuantType("q4_1", Q.Q4_1, F.MOSTLY_Q4_1, True), QuantType("q5_0", Q.Q5_0, F.MOSTLY_Q5_0, True),
        QuantType("q5_1", Q.Q5_1, F.MOSTLY_Q5_1, True))}


def quant_type(name: str) -> QuantType:
    types = quant_types()
    if name.lower() not in types:
        raise InvalidInput(f"unknown quantisation type {name!r}; choose one of: {', '.join(types)}", param="type")
    return types[name.lower()]


class Weights(Protocol):
    """A model's tensors by their HF names, read one at a time."""

    def names(self) -> list[str]: ...

    def get(self, name: str) -> np.ndarray: ...


class FolderWeights:
    """The ``*.safetensors`` files of a HF folder, read lazily."""

    def __init__(self, folder: Path) -> None:
        from safetensors import safe_open

        self._files = {}
        for path in sorted(folder.glob("*.safetensors")):
            handle = safe_open(str(path), framework="pt")
            for name in handle.keys():
                self._files[name] = handle

    def names(self) -> list[str]:
        return list(self._files)

    def get(self, name: str) -> np.ndarray:
        return self._files[name].get_tensor(name).float().numpy()


class StateDictWeights:
    """An in-memory model's state dict (a LoRA merged into its base)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def names(self) -> list[str]:
        return list(self._state)

    def get(self, name: str) -> np.ndarray:
        return self._state[name].detach().float().cpu().numpy()


@dataclass(frozen=True)
class HfModel:
    name: str  # written as general.name
    config: dict[str, Any]
    weights: Weights
    tokenizer_dir: Path
    chat_template: str | None


def read_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def unsupported(config: dict[str, Any]) -> str | None:
    """Why this HF config cannot be quantised here (None: it can)."""
    archs = [str(a) for a in config.get("architectures") or []]
    if not archs or archs[0] not in HF_CLASSES:
        return f"its architecture is {archs[0] if archs else config.get('model_type', 'unknown')}"
    if config.get("rope_scaling") or _rope(config).get("rope_type", "default") != "default":
        return "it uses rope scaling"
    if config.get("attention_bias") or config.get("mlp_bias"):
        return "it has attention or MLP biases"
    return None


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    """The rope settings (transformers 5 keeps them under ``rope_parameters``, 4 at the top level)."""
    return dict(config.get("rope_parameters") or {})


def _hparams(config: dict[str, Any]) -> dict[str, int | float]:
    heads = int(config["num_attention_heads"])
    theta = config.get("rope_theta") or _rope(config).get("rope_theta", 10000.0)
    return {"block_count": int(config["num_hidden_layers"]), "embedding_length": int(config["hidden_size"]),
            "feed_forward_length": int(config["intermediate_size"]), "attention.head_count": heads,
            "attention.head_count_kv": int(config.get("num_key_value_heads") or heads),
            "rope.freq_base": float(theta),
            "attention.layer_norm_rms_epsilon": float(config.get("rms_norm_eps", 1e-6)),
            "context_length": int(config.get("max_position_embeddings", 2048)),
            "vocab_size": int(config["vocab_size"])}


def template_mismatch(template: Path, model: HfModel) -> str | None:
    """Why ``template``'s metadata does not describe ``model`` (None: it does, key for key)."""
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    reader = GGUFReader(template)
    if str(reader.fields["general.architecture"].contents()) != ARCHITECTURE:
        return "another architecture"
    for key, want in _hparams(model.config).items():
        field = reader.fields.get(f"{ARCHITECTURE}.{key}")
        got = field.contents() if field is not None else None
        if got is None or not np.isclose(float(got), float(want), rtol=1e-6):
            return f"{key} is {got} there, {want} here"
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    tokenizer = AutoTokenizer.from_pretrained(model.tokenizer_dir, local_files_only=True)
    if tokenizer.convert_ids_to_tokens(list(range(len(tokens)))) != tokens or len(tokenizer) != len(tokens):
        return "another vocabulary"
    return None


def write_gguf(model: HfModel, out: Path, qt: QuantType, *, template: Path | None = None,
               progress: Progress | None = None) -> int:
    """Write ``model`` quantised as ``qt`` to ``out``; returns the number of tensors written.

    ``template``: a GGUF whose metadata describes this model (``template_mismatch`` is None)."""
    from gguf import GGML_QUANT_VERSION, GGUFWriter

    reason = unsupported(model.config)
    if reason is not None:
        raise InvalidInput(f"{model.name} cannot be quantised: {reason}; supported: {', '.join(HF_CLASSES)}")
    writer = GGUFWriter(out, ARCHITECTURE)
    if template is not None:
        _copy_metadata(writer, template)
    else:
        _build_metadata(writer, model)
    writer.add_name(model.name)
    writer.add_file_type(int(qt.file_type))
    writer.add_quantization_version(GGML_QUANT_VERSION)
    if model.chat_template:
        writer.add_chat_template(model.chat_template)
    count = 0
    for name, data, qtype in _quantised(model, qt, progress or NullProgress()):
        writer.add_tensor(name, data, raw_dtype=qtype)
        count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return count


def _quantised(model: HfModel, qt: QuantType, progress: Progress) -> Iterator[tuple[str, np.ndarray, Any]]:
    hp = _hparams(model.config)
    layers, heads, kv_heads = int(hp["block_count"]), int(hp["attention.head_count"]), int(hp["attention.head_count_kv"])
    names = [n for n in model.weights.names() if not n.endswith(".rotary_emb.inv_freq")]
    if model.config.get("tie_word_embeddings") and "lm_head.weight" in names:
        names.remove("lm_head.weight")  # llama.cpp reads tied embeddings from token_embd
    progress.start(f"quantising {model.name} to {qt.name}", len(names), unit="tensors")
    for hf_name in names:
        name = mapped_name(hf_name, layers, ARCHITECTURE)
        if name is None:
            raise InvalidInput(f"{model.name}: llama.cpp has no tensor for {hf_name}")
        data = model.weights.get(hf_name)
        rows = permuted_heads(name, heads, kv_heads)
        if rows is not None:
            data = permute(data, rows)
        yield (name, *_quantise(name, data, qt))
        progress.advance(1)
    progress.finish()


def _quantise(name: str, data: np.ndarray, qt: QuantType) -> tuple[np.ndarray, Any]:
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import QuantError, quantize

    if data.ndim <= 1 or not name.endswith(".weight"):
        return data.astype(np.float32), Q.F32
    qtype = Q.Q8_0 if qt.low_bit and name in ("token_embd.weight", "output.weight") else qt.qtype
    try:
        return quantize(data.astype(np.float32), qtype), qtype
    except QuantError:  # rows that do not split into blocks
        return data.astype(np.float16), Q.F16


def _copy_metadata(writer: Any, template: Path) -> None:
    from gguf import GGUFReader, GGUFValueType

    for key, field in GGUFReader(template).fields.items():
        if key.startswith(_OWN_KEYS):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub)


def _build_metadata(writer: Any, model: HfModel) -> None:
    from gguf import SpecialVocab

    hp = _hparams(model.config)
    writer.add_context_length(hp["context_length"])
    writer.add_embedding_length(hp["embedding_length"])
    writer.add_block_count(hp["block_count"])
    writer.add_feed_forward_length(hp["feed_forward_length"])
    writer.add_head_count(hp["attention.head_count"])
    writer.add_head_count_kv(hp["attention.head_count_kv"])
    writer.add_rope_freq_base(hp["rope.freq_base"])
    writer.add_layer_norm_rms_eps(hp["attention.layer_norm_rms_epsilon"])
    writer.add_vocab_size(hp["vocab_size"])
    head_dim = model.config.get("head_dim") or int(hp["embedding_length"]) // int(hp["attention.head_count"])
    writer.add_rope_dimension_count(int(head_dim))
    _add_vocab(writer, model, int(hp["vocab_size"]))
    special = SpecialVocab(model.tokenizer_dir, load_merges=True, n_vocab=int(hp["vocab_size"]))
    special.chat_template = None  # the stored one is written by write_gguf
    special.add_to_gguf(writer)


def _add_vocab(writer: Any, model: HfModel, n_vocab: int) -> None:
    """The HF tokenizer's tokens as llama.cpp's byte-level BPE vocabulary (what convert_hf_to_gguf's
    get_vocab_base writes: added tokens marked control or user-defined, unused ids padded)."""
    from gguf import TokenType
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model.tokenizer_dir, local_files_only=True)
    if not getattr(tok, "is_fast", False) or tok.backend_tokenizer.model.__class__.__name__ != "BPE":
        raise InvalidInput(f"{model.name}: only byte-level BPE tokenizers can be written without a GGUF "
                           "ancestor to copy the vocabulary from")
    reverse = {i: t for t, i in tok.get_vocab().items()}
    added = tok.get_added_vocab()
    tokens, types = [], []
    for i in range(n_vocab):
        text = reverse.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif text in added:
            special = any(t.content == text and t.special for t in tok.added_tokens_decoder.values())
            tokens.append(text)
            types.append(TokenType.CONTROL if special else TokenType.USER_DEFINED)
        else:
            tokens.append(text)
            types.append(TokenType.NORMAL)
    writer.add_type("model")
    writer.add_tokenizer_model("gpt2")
    # llama.cpp's converter names the pre-tokenizer by a hash of known tokenizers' output; without that
    # table the generic one is written. llmos tokenises prompts itself, so serving does not depend on it.
    writer.add_tokenizer_pre("default")
    writer.add_add_space_prefix(False)
    probe = tok("a")["input_ids"]
    writer.add_add_bos_token(bool(probe) and tok.bos_token_id is not None and probe[0] == tok.bos_token_id)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
