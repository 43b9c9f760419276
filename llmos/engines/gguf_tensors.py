"""What llama.cpp's HF -> GGUF converter does to tensors, shared by the LoRA converter and the quantiser.

Tensor names come from gguf's own map (``get_tensor_name_map``). For the ``llama`` architecture the
converter permutes the rows of the query and key projections (``LlamaModel.permute``: each head's two
rotary halves interleaved, the layout llama.cpp's rope expects); anything derived from those weights
(a LoRA's B matrix, a quantised copy) must be permuted the same way.
"""

from __future__ import annotations

from typing import Any

# GGUF architectures whose HF -> GGUF conversion permutes q / k rows (value: permute them here too).
ARCHITECTURES = {"llama": True, "qwen2": False, "qwen3": False}


def mapped_name(stem: str, layers: int, architecture: str) -> str | None:
    """The GGUF tensor name of the HF tensor ``stem`` (None: the architecture has no such tensor)."""
    import gguf

    arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == architecture)
    return gguf.get_tensor_name_map(arch, layers).get_name(stem, try_suffixes=(".weight", ".bias"))


def permute(w: Any, heads: int) -> Any:
    """convert_hf_to_gguf's LlamaModel.permute on the output rows (the rotary halves interleaved)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permuted_heads(gguf_name: str, heads: int, kv_heads: int) -> int | None:
    """How many heads ``gguf_name``'s rows are permuted over (None: not permuted)."""
    if gguf_name.endswith(".attn_q.weight"):
        return heads
    if gguf_name.endswith(".attn_k.weight"):
        return kv_heads
    return None
