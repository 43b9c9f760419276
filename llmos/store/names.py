"""Model names: ``name`` or ``name:tag``; the default tag is ``latest``.

OpenAI's fine-tuned model names (``ft:BASE:SUFFIX:ID``, the suffix possibly empty) are read as the
llmos name they stand for, ``ft-BASE[-SUFFIX]-ID``: the name a fine-tuning job's result is stored
under, so a client can call the ``fine_tuned_model`` it read back as it would on OpenAI.
"""

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


def openai_ft_name(text: str) -> str | None:
    """``ft:BASE:SUFFIX:ID`` as the stored name ``ft-BASE[-SUFFIX]-ID``; None for any other text."""
    parts = text.split(":")
    if len(parts) != 4 or parts[0] != "ft" or not parts[1] or not parts[3]:
        return None
    return "-".join(["ft", parts[1], *([parts[2]] if parts[2] else []), parts[3]])


def _check(part: str, what: str, full: str) -> None:
    if not _PART.match(part) or ".." in part:
        raise InvalidName(
            f"invalid model {what} {part!r} in {full!r}: use letters, digits, '.', '_' or '-' "
            "(up to 128, starting with a letter or digit; no path separators or '..')")


def parse_ref(text: str) -> ModelRef:
    """Parse ``name[:tag]``; raises InvalidName for anything that could escape a folder."""
    alias = openai_ft_name(text) if isinstance(text, str) and text.startswith("ft:") else None
    if alias is not None:
        _check(alias, "name", text)
        return ModelRef(alias, DEFAULT_TAG)
    if not isinstance(text, str) or not text or text.count(":") > 1:
        raise InvalidName(f"invalid model name {text!r}: expected NAME or NAME:TAG")
    name, colon, tag = text.partition(":")
    _check(name, "name", text)
    tag = tag if colon else DEFAULT_TAG
    _check(tag, "tag", text)
    return ModelRef(name, tag)


DEFAULT_TENANT = "default"  # the local user's tenant (auth off, the in-process CLI)


@dataclass(frozen=True)
class ModelKey:
    """A model's identity across tenants: ``tenant/name:tag`` for a private model, ``name:tag`` for a
    public one. Internal only (engines, workers and caches are keyed by it); no user ever types one."""

    tenant: str | None
    ref: ModelRef

    def __str__(self) -> str:
        return f"{self.tenant}/{self.ref}" if self.tenant else str(self.ref)


def key_of(tenant: str | None, ref: str | ModelRef) -> str:
    """The key of ``ref`` in ``tenant``'s namespace (``None``: public)."""
    return f"{tenant}/{ref}" if tenant else str(ref)


def is_key(text: str) -> bool:
    return isinstance(text, str) and "/" in text


def parse_key(text: str) -> ModelKey:
    """Parse ``tenant/name[:tag]`` or ``name[:tag]`` (a public model)."""
    tenant, slash, rest = text.partition("/") if is_key(text) else (None, "", text)
    if slash and not tenant:
        raise InvalidName(f"invalid model key {text!r}")
    return ModelKey(tenant, parse_ref(rest))
