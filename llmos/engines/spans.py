"""Token-classification output -> entity spans with character offsets.

A word takes the label of its first sub-word token (what token-classification training labels);
words then merge into entities by their tags: IOB2 (``B-X`` opens, ``I-X`` continues), the
``E-``/``S-`` ends of BIOES, or plain labels where neighbouring words with the same label join.
``O`` (and an empty label) is outside any entity.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmos.engines.base import Span

_OUTSIDE = {"O", ""}


@dataclass
class WordTag:
    """One word's prediction: character offsets into the text, its label, its probability."""

    start: int
    end: int
    label: str
    score: float


def word_tags(
    offsets: list[tuple[int, int]], word_ids: list[int | None], labels: list[str], scores: list[float]
) -> list[WordTag]:
    """Collapse sub-word tokens into words, keeping the first token's label."""
    words: list[WordTag] = []
    last_word: int | None = None
    for (start, end), word, label, score in zip(offsets, word_ids, labels, scores):
        if word is None or start == end:
            continue  # special tokens and zero-width pieces carry no text
        if word == last_word:
            words[-1].end = max(words[-1].end, end)
        else:
            words.append(WordTag(start, end, label, score))
        last_word = word
    return words


def split_tag(label: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; a plain ``"PER"`` -> ``("", "PER")``."""
    if len(label) > 2 and label[1] in "-_" and label[0] in "BIES":
        return label[0], label[2:]
    return "", label


def merge_spans(text: str, words: list[WordTag]) -> list[Span]:
    spans: list[Span] = []
    current: list[WordTag] = []
    kind = ""

    def close() -> None:
        if current:
            start, end = current[0].start, current[-1].end
            score = sum(w.score for w in current) / len(current)
            spans.append(Span(start, end, kind, text[start:end], score))
            current.clear()

    for word in words:
        prefix, entity = split_tag(word.label)
        if word.label in _OUTSIDE:
            close()
            continue
        continues = current and entity == kind and prefix in ("I", "E", "")
        if not continues:
            close()
            kind = entity
        current.append(word)
        if prefix in ("E", "S"):
            close()
    close()
    return spans
