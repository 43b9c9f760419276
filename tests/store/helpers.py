"""Builders of broken and odd model folders for import tests."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path


def copy_model(src: Path, dst: Path, *, skip: tuple[str, ...] = ()) -> Path:
    """A copy of a model folder whose small files are real copies and weights are symlinks."""
    dst.mkdir(parents=True)
    for p in src.rglob("*"):
        rel = p.relative_to(src)
        if p.is_dir() or rel.name in skip or rel.name.startswith("."):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".safetensors":
            os.symlink(p.resolve(), dst / rel)
        else:
            shutil.copyfile(p, dst / rel)
    return dst


def write_weights(folder: Path, data: bytes) -> None:
    target = folder / "model.safetensors"
    target.unlink(missing_ok=True)
    target.write_bytes(data)


def truncated(weights: Path, keep: float = 0.5) -> bytes:
    data = weights.read_bytes()
    return data[: int(len(data) * keep)]


def huge_header(weights: Path) -> bytes:
    return struct.pack("<Q", 1 << 60) + weights.read_bytes()[8:4096]


def flipped_header(weights: Path) -> bytes:
    data = bytearray(weights.read_bytes())
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    data[8 + n // 2] ^= 0xFF  # one flipped byte in the JSON header
    return bytes(data)
