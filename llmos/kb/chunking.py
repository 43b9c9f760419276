"""Chunking: a document's text cut into overlapping pieces of about ``size`` characters.

Cuts fall on a paragraph, line, sentence or word boundary near the target size when one is within the
last quarter of the piece; the next piece starts ``overlap`` characters before the cut (moved forward to
a word start), so a passage split by a cut is still whole in one of the two pieces.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmos.errors import InvalidInput

DEFAULT_SIZE = 800
DEFAULT_OVERLAP = 120
_BREAKS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


@dataclass(frozen=True)
class Piece:
    start: int
    end: int
    text: str


def check_chunking(size: int, overlap: int) -> None:
    if not 50 <= size <= 20_000:
        raise InvalidInput(f"chunk size {size} is outside 50..20000 characters", param="chunk_size")
    if not 0 <= overlap < size // 2:
        raise InvalidInput(f"overlap {overlap} must be at least 0 and under half the chunk size ({size // 2})",
                           param="overlap")


def chunk_text(text: str, size: int = DEFAULT_SIZE, overlap: int = DEFAULT_OVERLAP) -> list[Piece]:
    check_chunking(size, overlap)
    pieces: list[Piece] = []
    start, n = _skip_space(text, 0), len(text)
    while start < n:
        end = n if n - start <= size else _cut(text, start, start + size)
        piece = text[start:end].strip()
        if piece:
            pieces.append(Piece(start, end, piece))
        if end >= n:
            break
        start = _skip_space(text, _word_start(text, max(end - overlap, start + 1), end))
    return pieces


def _cut(text: str, start: int, limit: int) -> int:
    """The best boundary in the last quarter of ``text[start:limit]`` (the limit itself when none)."""
    floor = start + (limit - start) * 3 // 4
    for sep in _BREAKS:
        at = text.rfind(sep, floor, limit)
        if at != -1:
            return at + len(sep)
    return limit


def _word_start(text: str, at: int, end: int) -> int:
    """``at`` moved forward to the start of a word (not past ``end``)."""
    while at < end and at > 0 and not text[at - 1].isspace():
        at += 1
    return at


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at
