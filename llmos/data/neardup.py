"""Near-duplicate detection: MinHash signatures with LSH banding, confirmed by exact Jaccard.

Why this and not ``datasketch``: datasketch builds one Python ``MinHash`` object per document and
hashes each shingle with SHA-1, which costs tens of microseconds per short text; SST-2's 67k phrases
would take several seconds before any comparison. Here all shingles of all texts are hashed once with
numpy (a polynomial rolling hash over code points), and each of the ``BANDS * ROWS`` permutations is
one vectorised multiply-shift plus ``np.minimum.reduceat``, so the whole signature matrix costs well
under a second. The algorithm is the textbook one (Broder's MinHash, LSH banding as in Leskovec et al.,
"Mining of Massive Datasets", ch. 3), and every candidate pair is verified with the exact Jaccard
similarity of its shingle sets, so the estimate's noise never removes a row on its own.

Shingles are character 5-grams of the comparison form (casefolded, punctuation dropped, spaces
collapsed): short texts such as SST-2 phrases have too few word n-grams for a stable similarity.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

SHINGLE = 5
BANDS, ROWS = 16, 4  # S-curve midpoint (1/16)^(1/4) = 0.5: pairs at 0.8 similarity collide 99.98% of the time
MAX_CHECKS = 32  # candidate rows verified per row, so one huge bucket cannot make the pass quadratic
_PUNCT = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")
_MASK = np.uint64((1 << 61) - 1)


def comparison_form(text: str) -> str:
    """What two texts must share to count as the same: case, punctuation and spacing do not matter."""
    return _SPACE.sub(" ", _PUNCT.sub(" ", unicodedata.normalize("NFKC", text).casefold())).strip()


def shingles(text: str) -> set[str]:
    return {text[i:i + SHINGLE] for i in range(max(1, len(text) - SHINGLE + 1))} if text else set()


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def near_duplicates(texts: Sequence[str], threshold: float = 0.8, seed: int = 0) -> list[int | None]:
    """For each text, the index of an earlier kept text it nearly duplicates (Jaccard >= threshold),
    or None when it is kept. Earlier rows win, and a removed row is never the reason to remove another,
    so chains (a~b, b~c, but not a~c) keep c. Empty texts are always kept (cleaning drops them)."""
    forms = [comparison_form(t) for t in texts]
    prev = previous_in_bucket(band_keys(minhash_signatures(forms, seed)), [bool(f) for f in forms])
    has_candidates = (prev >= 0).any(axis=0).tolist()
    chains = prev.tolist()
    exact: dict[str, int] = {}
    cache: dict[int, set[str]] = {}
    result: list[int | None] = []
    for i, form in enumerate(forms):
        match = exact.get(form) if form else None
        if match is None and has_candidates[i]:
            match = _match(i, forms, chains, result, cache, threshold)
        result.append(match)
        if match is None and form:
            exact[form] = i
    return result


def _match(i: int, forms: Sequence[str], chains: list[list[int]], result: list[int | None],
           cache: dict[int, set[str]], threshold: float) -> int | None:
    """Walk back through the rows sharing a band with row i; the first kept one similar enough wins."""
    mine = shingles(forms[i])
    seen: set[int] = set()
    for chain in chains:
        j = chain[i]
        while j >= 0 and len(seen) < MAX_CHECKS:
            if j not in seen and result[j] is None:
                seen.add(j)
                theirs = cache.get(j)
                if theirs is None:
                    theirs = cache[j] = shingles(forms[j])
                if jaccard(mine, theirs) >= threshold:
                    return j
            j = chain[j]
    return None


def band_keys(signatures: np.ndarray) -> np.ndarray:
    """One uint64 per band: the band's ROWS values folded together (a collision only costs a check)."""
    key = np.zeros((signatures.shape[0], BANDS), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(ROWS):
            key = key * np.uint64(0x9E3779B97F4A7C15) + signatures[:, r::ROWS][:, :BANDS]
    return key


def previous_in_bucket(keys: np.ndarray, present: list[bool]) -> np.ndarray:
    """(BANDS, n): for each band and row, the closest earlier row with the same band key, or -1.
    A stable sort keeps equal keys in row order, so neighbours in sorted order are those rows."""
    n = keys.shape[0]
    prev = np.full((BANDS, n), -1, dtype=np.int64)
    rows = np.flatnonzero(np.asarray(present, dtype=bool))
    for b in range(BANDS):
        order = rows[np.argsort(keys[rows, b], kind="stable")]
        sorted_keys = keys[order, b]
        same = sorted_keys[1:] == sorted_keys[:-1]
        prev[b, order[1:][same]] = order[:-1][same]
    return prev


def minhash_signatures(forms: Sequence[str], seed: int = 0) -> np.ndarray:
    """A (len(forms), BANDS * ROWS) uint64 matrix; an empty text gets an all-max signature."""
    hashes, starts = _shingle_hashes(forms)
    n_perm = BANDS * ROWS
    out = np.full((len(forms), n_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
    if hashes.size == 0:
        return out
    rng = np.random.default_rng(seed)
    mult = rng.integers(1, 1 << 62, size=n_perm, dtype=np.uint64) | np.uint64(1)
    add = rng.integers(0, 1 << 62, size=n_perm, dtype=np.uint64)
    nonempty = np.flatnonzero(np.diff(np.append(starts, hashes.size)) > 0)
    with np.errstate(over="ignore"):
        for p in range(n_perm):
            permuted = hashes * mult[p] + add[p]  # multiply-add mod 2^64: a universal hash family
            out[nonempty, p] = np.minimum.reduceat(permuted, starts[nonempty])
    return out


def _shingle_hashes(forms: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Every text's 5-gram hashes, concatenated, and the offset where each text's hashes start."""
    lengths = np.array([len(f) for f in forms], dtype=np.int64)
    counts = np.where(lengths > 0, np.maximum(lengths - SHINGLE + 1, 1), 0)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    joined = "".join(f.ljust(SHINGLE, "\0") if f else "" for f in forms)
    codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    padded_len = np.where(lengths > 0, np.maximum(lengths, SHINGLE), 0)
    text_start = np.concatenate([[0], np.cumsum(padded_len)[:-1]]).astype(np.int64)
    # shingle k of text t starts at text_start[t] + k; build those positions without a Python loop
    owner = np.repeat(np.arange(len(forms)), counts)
    position = text_start[owner] + (np.arange(counts.sum()) - starts[owner])
    h = np.zeros(position.size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(SHINGLE):
            h = h * np.uint64(1_000_003) + codes[position + k]
    return h & _MASK, starts
