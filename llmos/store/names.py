"""Model names: ``name`` or ``name:tag``; the default tag is ``latest``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmos.errors import InvalidName

DEFAULT_TAG = "latest"
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ModelRef:
    name: str
    tag: str = DEFAULT_TAG

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"


def _check(part: str, what: str, full: str) -> None:
    if not _PART.match(part) or ".." in part:
        raise InvalidName(
            f"invalid model {what} {part!r} in {full!r}: use letters, digits, '.', '_' or '-' "
            "(up to 128, starting with a letter or digit; no path separators or '..')")


def parse_ref(text: str) -> ModelRef:
    """Parse ``name[:tag]``; raises InvalidName for anything that could escape a folder."""
    if not isinstance(text, str) or not text or text.count(":") > 1:
        raise InvalidName(f"invalid model name {text!r}: expected NAME or NAME:TAG")
    name, colon, tag = text.partition(":")
    _check(name, "name", text)
    tag = tag if colon else DEFAULT_TAG
    _check(tag, "tag", text)
    return ModelRef(name, tag)
