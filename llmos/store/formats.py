"""Read and check model files without trusting them: safetensors headers, GGUF, configs.

Every check reads only what a header declares and compares it with the real file size, so a
truncated, bit-flipped or lying file gives a clear ImportFailed instead of a crash or a huge
allocation later.
"""

from __future__ import annotations

import json
import math
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

from llmos.errors import ImportFailed

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}
MAX_HEADER = 100 << 20  # a real safetensors header is kilobytes; refuse absurd declared sizes
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                "I64": "int64", "I32": "int32", "I8": "int8", "U8": "uint8"}


@dataclass
class WeightsSummary:
    parameters: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)  # dtype name -> parameter count

    def add(self, other: "WeightsSummary") -> None:
        self.parameters += other.parameters
        for k, v in other.dtypes.items():
            self.dtypes[k] = self.dtypes.get(k, 0) + v

    @property
    def dtype(self) -> str | None:
        return max(self.dtypes, key=self.dtypes.__getitem__) if self.dtypes else None


def check_safetensors(path: Path) -> WeightsSummary:
    """Validate a safetensors file's header against its size; count parameters per dtype."""
    size = _regular_size(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ImportFailed(f"{path.name}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise ImportFailed(f"{path.name}: corrupt or truncated safetensors (header declares {n} bytes, "
                               f"file has {size})")
        header = _parse_header(path, fh.read(n))
    return _summarise(path, header, data_len=size - 8 - n)


def _parse_header(path: Path, raw: bytes) -> dict[str, object]:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ImportFailed(f"{path.name}: corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise ImportFailed(f"{path.name}: corrupt safetensors header (not a JSON object)")
    return header


def _summarise(path: Path, header: dict[str, object], data_len: int) -> WeightsSummary:
    summary = WeightsSummary()
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        numel = _check_tensor(path, name, spec, data_len)
        dtype = _DTYPE_NAMES.get(spec["dtype"], spec["dtype"].lower())  # type: ignore[index]
        if not dtype.startswith(("float", "bfloat", "f8")):
            continue  # integer buffers such as position ids are not parameters
        summary.parameters += numel
        summary.dtypes[dtype] = summary.dtypes.get(dtype, 0) + numel
    return summary


def _check_tensor(path: Path, name: str, spec: object, data_len: int) -> int:
    try:
        dtype, shape, (begin, end) = spec["dtype"], spec["shape"], spec["data_offsets"]  # type: ignore[index]
        if not all(_natural(d) for d in [*shape, begin, end]):  # int() would pass -2 x -2 or 2.5 as a shape
            raise ValueError("dimensions and offsets must be non-negative integers")
        numel = math.prod(shape)
        expected = numel * _ITEMSIZE[dtype]
    except (KeyError, TypeError, ValueError):
        raise ImportFailed(f"{path.name}: corrupt safetensors entry for tensor {name!r}") from None
    if not (0 <= begin <= end) or end - begin != expected:
        raise ImportFailed(f"{path.name}: tensor {name!r} declares {end - begin} bytes, its shape needs {expected}")
    if end > data_len:
        raise ImportFailed(f"{path.name}: truncated: tensor {name!r} ends at byte {end}, "
                           f"the file holds {data_len} bytes of data")
    return numel


def _regular_size(path: Path) -> int:
    """The size of ``path``, which must be a regular file (through links): a FIFO would block the
    first read forever and a device such as /dev/zero never ends."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ImportFailed(f"{path.name}: cannot read it ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImportFailed(f"{path.name}: not a regular file (a device, pipe or socket)")
    return st.st_size


def _natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_gguf(path: Path) -> dict[str, object]:
    """Validate a GGUF file fully (header, metadata, tensor extents); returns its metadata keys."""
    _regular_size(path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ImportFailed(f"{path.name}: not a GGUF file (bad magic {magic!r})")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        arch = reader.fields["general.architecture"].contents()
        for t in reader.tensors:
            end = int(t.data_offset) + int(t.n_bytes)
            if end > path.stat().st_size:
                raise ImportFailed(f"{path.name}: truncated: tensor {t.name!r} runs past the end of the file")
    except ImportFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - the gguf reader raises many kinds on bad input
        raise ImportFailed(f"{path.name}: corrupt or truncated GGUF ({type(exc).__name__}: {exc})") from None
    return {"architecture": arch, "tensors": len(reader.tensors)}


def gguf_summary(path: Path) -> WeightsSummary:
    """Parameters of a (checked) GGUF file per tensor type (``q8_0``, ``f32``...)."""
    from gguf import GGUFReader

    summary = WeightsSummary()
    for t in GGUFReader(path).tensors:
        kind = t.tensor_type.name.lower()
        summary.parameters += int(t.n_elements)
        summary.dtypes[kind] = summary.dtypes.get(kind, 0) + int(t.n_elements)
    return summary


def read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportFailed(f"{path.name}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ImportFailed(f"{path.name}: expected a JSON object")
    return data


def tasks_for(config: dict[str, object]) -> list[str]:
    """Which tasks a model can serve, from its config's architecture."""
    archs = [str(a) for a in (config.get("architectures") or [])]
    arch = archs[0] if archs else ""
    if arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel"):
        return ["generate"]
    if arch.endswith("ForSequenceClassification"):
        return ["classify", "embed"]
    if arch.endswith("ForTokenClassification"):
        return ["tag", "embed"]
    if arch.endswith("Model") or arch.endswith("ForMaskedLM"):
        return ["embed"]
    raise ImportFailed(f"unsupported architecture {arch or '(none given)'!r}: llmos serves causal LMs, "
                       "encoders, and sequence / token classifiers")
