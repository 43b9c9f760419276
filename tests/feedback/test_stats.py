"""The gate's statistics: the paired bootstrap's lower bound of a candidate's mean per-row gain."""

from __future__ import annotations

import math

import pytest

from llmos.feedback.stats import paired_gain


def test_a_clear_gain_has_a_positive_lower_bound() -> None:
    serving = [0.0] * 30 + [1.0] * 30
    candidate = [1.0] * 25 + [0.0] * 5 + [1.0] * 30  # fixes 25 of 30 mistakes, breaks nothing
    gain = paired_gain(candidate, serving, confidence=0.9, seed=1)
    assert gain.n == 60 and gain.mean == pytest.approx(25 / 60)
    assert 0.25 < gain.lower < gain.mean


def test_a_gain_of_one_row_in_noise_is_not_significant() -> None:
    # fixes 6 rows, breaks 5: a raw difference of +1/40 that the old gate would have passed at margin 0.01
    serving = [0.0] * 6 + [1.0] * 5 + [1.0] * 29
    candidate = [1.0] * 6 + [0.0] * 5 + [1.0] * 29
    gain = paired_gain(candidate, serving, confidence=0.9)
    assert gain.mean == pytest.approx(1 / 40) and gain.mean > 0.01
    assert gain.lower < 0  # the bound says: maybe no better at all


def test_the_bound_is_seeded_and_tightens_with_confidence_and_rows() -> None:
    a, b = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0] * 5, [0.0, 0.0, 1.0, 0.0, 0.0, 1.0] * 5
    assert paired_gain(a, b, seed=3) == paired_gain(a, b, seed=3)
    assert paired_gain(a, b, confidence=0.99).lower < paired_gain(a, b, confidence=0.8).lower
    assert paired_gain(a * 4, b * 4).lower > paired_gain(a, b).lower  # more evidence, a tighter bound


def test_edge_cases() -> None:
    empty = paired_gain([], [])
    assert empty.n == 0 and empty.mean == 0 and math.isinf(empty.lower)
    one = paired_gain([1.0], [0.0])
    assert one.lower == one.mean == 1.0
    with pytest.raises(ValueError, match="equal lengths"):
        paired_gain([1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="confidence"):
        paired_gain([1.0], [0.0], confidence=1.0)
