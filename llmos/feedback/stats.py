"""The gate's statistics: how sure we are that a candidate beats the serving version.

Both versions are scored on the same rows, so the evidence is paired: one difference per row
(candidate - serving, each a per-row score such as 1/0 for a right label or chrF of an answer). A raw
mean difference on a handful of rows is noise; the gate asks for the lower confidence bound of the
mean difference instead, from a seeded paired bootstrap (the rows resampled with replacement, the
mean difference recomputed each time), so the same scores always give the same verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000


@dataclass(frozen=True)
class PairedGain:
    """The candidate's mean per-row gain over the serving version and its one-sided lower bound."""

    n: int
    mean: float
    lower: float  # P(true mean gain >= lower) ~ confidence
    confidence: float

    def describe(self) -> str:
        return f"gain {self.mean:+.4f} (lower {self.confidence:.0%} bound {self.lower:+.4f}, {self.n} rows)"


def paired_gain(candidate: Sequence[float], serving: Sequence[float], *, confidence: float = 0.9,
                resamples: int = RESAMPLES, seed: int = 0) -> PairedGain:
    """The mean of ``candidate[i] - serving[i]`` and its bootstrap lower bound at ``confidence``.

    With no rows the gain is 0 with a lower bound of -inf (nothing is known); with one row the bound
    is the difference itself (a bootstrap of one value cannot vary)."""
    if len(candidate) != len(serving):
        raise ValueError(f"paired scores need equal lengths: {len(candidate)} vs {len(serving)}")
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1): {confidence}")
    diff = np.asarray(candidate, dtype=float) - np.asarray(serving, dtype=float)
    if diff.size == 0:
        return PairedGain(0, 0.0, float("-inf"), confidence)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, diff.size, size=(resamples, diff.size))
    means = diff[picks].mean(axis=1)
    lower = float(np.quantile(means, 1 - confidence))
    return PairedGain(int(diff.size), float(diff.mean()), min(lower, float(diff.mean())), confidence)
