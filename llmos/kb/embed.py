"""Embeddings for a knowledge base, always through the kernel: the model is the kernel's (its memory
budget, its worker, its queue limits), never a second copy loaded beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from llmos.kernel.core import Kernel, Resolved

BATCH = 64  # texts per engine call: long enough to batch, short enough to interleave with other calls


class Embedder(Protocol):
    """Unit-length float32 vectors for texts, and which model (manifest digest) made them."""

    @property
    def digest(self) -> str: ...

    @property
    def model(self) -> str: ...

    def embed(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class KernelEmbedder:
    kernel: Kernel
    resolved: Resolved

    @classmethod
    def of(cls, kernel: Kernel, model: str, tenant: str) -> KernelEmbedder:
        """The embedding model as ``tenant`` names it; a model that cannot embed is a 400 naming the ones that can."""
        return cls(kernel, kernel.resolve(model, "embed", tenant=tenant))

    @property
    def digest(self) -> str:
        return self.resolved.info.digest

    @property
    def model(self) -> str:
        return self.resolved.named  # a knowledge base follows the name; its digest says when to re-embed

    def embed(self, texts: list[str]) -> np.ndarray:
        parts = []
        adapter = self.resolved.adapter
        for i in range(0, len(texts), BATCH):
            batch = texts[i:i + BATCH]
            parts.append(np.asarray(self.kernel.call_blocking(self.resolved, lambda e, b=batch: e.embed(b, adapter=adapter)),
                                    dtype=np.float32))
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return normalise(np.concatenate(parts))


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
