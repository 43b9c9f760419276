"""Starting llama.cpp's server in-process (the ``xllamacpp`` binding) the way an engine needs it.

The binding runs llama.cpp's own server loop (continuous batching over slots) in a thread of this
process and answers completion calls directly, without HTTP. It still opens its HTTP listener; it is
bound to a Unix socket in a private folder (mode 0700) and guarded by a random API key, so nothing
outside this process can use it. Its start-up installs SIGINT / SIGTERM handlers of its own, which
would take Ctrl-C and ``kill`` away from the daemon: the handlers in place before are put back.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmos.errors import EngineFailed, ImportFailed

KV_BYTES = 2  # f16 cache entries, llama.cpp's default
_START_LOCK = threading.Lock()  # handler save / restore must not interleave between two loads
_SIGACTION_SIZE = 256  # >= sizeof(struct sigaction) on every Linux ABI


@dataclass(frozen=True)
class GgufShape:
    """What the engine needs from a GGUF's metadata: to size its cache and to name it in errors."""

    architecture: str
    context_length: int
    layers: int
    kv_width: int  # per token and layer: key + value channels over all KV heads


def arch_number(reader: Any, arch: str, key: str, default: int = 0) -> int:
    """A GGUF reader's ``<arch>.<key>`` number (per-layer lists: their largest), else ``default``."""
    field = reader.fields.get(f"{arch}.{key}")
    value = field.contents() if field is not None else default
    return int(max(value) if isinstance(value, list) else value)


def read_shape(path: Path) -> GgufShape:
    """Read a GGUF's architecture and attention shape (metadata only; tensors are not touched)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        arch = str(reader.fields["general.architecture"].contents())

        def num(key: str, default: int = 0) -> int:
            return arch_number(reader, arch, key, default)

        heads = num("attention.head_count")
        kv_heads = num("attention.head_count_kv", heads)
        embd = num("embedding_length")
        head_dim = num("attention.key_length", embd // heads if heads else 0)
        value_dim = num("attention.value_length", head_dim)
        return GgufShape(arch, num("context_length", 2048), num("block_count"), kv_heads * (head_dim + value_dim))
    except Exception as exc:  # noqa: BLE001 - the reader raises many kinds on bad input
        raise ImportFailed(f"{path.name}: corrupt or truncated GGUF ({type(exc).__name__}: {exc})") from None


def known_architectures() -> set[str]:
    """Architectures llama.cpp's GGUF schema names (the ``gguf`` package tracks llama.cpp's list)."""
    import gguf

    return {str(name) for name in gguf.MODEL_ARCH_NAMES.values()}


def check_architecture(path: Path, arch: str) -> None:
    if arch not in known_architectures():
        raise ImportFailed(f"{path.name}: llama.cpp does not know the architecture {arch!r}; "
                           "import it with --engine hf if transformers can load it")


@dataclass(frozen=True)
class ServerConfig:
    gguf: Path
    slots: int  # sequences llama.cpp decodes together
    kv_tokens: int  # cache cells of all slots together
    threads: int
    loras: tuple[Path, ...] = ()  # LoRA GGUFs loaded unapplied; a request picks its own by index
    gpu_layers: int = 0  # layers offloaded to a GPU (-1: all); 0 on the host or with a CPU-only build
    main_gpu: int = 0  # the CUDA ordinal offloaded layers go to
    per_slot: bool = False  # each slot its own kv_tokens / slots cells, instead of one pool they share
    prompt_cache_mib: int = 0  # host RAM for prompts saved out of idle slots (0: none)


def kv_bytes(shape: GgufShape, tokens: int) -> int:
    return shape.layers * shape.kv_width * tokens * KV_BYTES


def _lora_info(path: Path) -> Any:
    import xllamacpp

    info = xllamacpp.CommonAdapterLoraInfo()
    info.path, info.scale = str(path), 0.0
    return info


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _save_handlers(libc: Any) -> dict[int, Any]:
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        buf = ctypes.create_string_buffer(_SIGACTION_SIZE)
        if libc.sigaction(int(sig), None, buf) == 0:
            saved[int(sig)] = buf
    return saved


def _restore_handlers(libc: Any, saved: dict[int, Any]) -> None:
    for sig, buf in saved.items():
        libc.sigaction(sig, buf, None)


class LlamaServer:
    """One llama.cpp server context holding one model; ``close`` frees it."""

    def __init__(self, config: ServerConfig) -> None:
        import xllamacpp

        self.config = config
        self._dir = Path(tempfile.mkdtemp(prefix="llmos-llama-"))  # mkdtemp makes it 0700
        params = xllamacpp.CommonParams()
        params.model.path = str(config.gguf)
        params.n_parallel = config.slots
        params.n_ctx = config.kv_tokens
        # Shared: a short chat does not hold a long one's room, but every sequence's attention runs over
        # every cell in use (measured: 64 clients decode ~30% slower than with per-slot cells).
        params.kv_unified = not config.per_slot
        params.cache_prompt = True  # a slot keeps its prompt's cache: a shared prefix is not recomputed
        # Prompts moved out of idle slots into host RAM (llama.cpp's own default is 8 GiB per context,
        # outside any budget): bounded, and counted in the engine's footprint.
        params.cache_ram_mib = config.prompt_cache_mib
        params.cpuparams.n_threads = config.threads
        params.cpuparams_batch.n_threads = config.threads
        params.n_threads_http = 1
        params.n_gpu_layers = config.gpu_layers
        params.main_gpu = config.main_gpu
        params.hostnames = [str(self._dir / "server.sock")]
        params.api_keys = [secrets.token_hex(32)]
        params.verbosity = -1
        params.warmup = False
        if config.loras:
            params.lora_adapters = [_lora_info(path) for path in config.loras]
            params.lora_init_without_apply = True  # scale 0 unless a request names it
        libc = _libc()
        with _START_LOCK:
            saved = _save_handlers(libc)
            try:
                self._server = xllamacpp.Server(params)
            except Exception as exc:  # noqa: BLE001 - the binding says only that start-up failed
                shutil.rmtree(self._dir, ignore_errors=True)
                raise EngineFailed(f"llama.cpp could not load {config.gguf.name}: {exc}") from None
            finally:
                _restore_handlers(libc, saved)

    def complete(self, body: dict[str, Any], callback: Any) -> None:
        """Stream one completion: ``callback(chunk)`` per chunk; it returns True to stop (frees the slot)."""
        self._server.handle_completions(body, callback)

    def close(self) -> None:
        server, self._server = getattr(self, "_server", None), None
        del server  # the binding's destructor stops the loop and frees the model
        shutil.rmtree(self._dir, ignore_errors=True)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads() -> int:
    """Threads for a new llama.cpp engine: the cores other work is not using now (at least one).

    llama.cpp's threads meet at a barrier after every operation, so one thread the OS takes away
    stalls them all: on 2 busy cores, 2 threads decode about 20x slower than 1 (measured), while on
    2 idle cores 2 threads are the faster choice. Set LLMOS_LLAMACPP_THREADS to fix the number.
    """
    cores = usable_cores()
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, round(cores - busy)))
