"""Scopes: what a key may do. ``admin`` implies every other scope."""

from __future__ import annotations

from collections.abc import Iterable

from llmos.errors import InvalidInput

ADMIN = "admin"  # everything: key management, load / unload, other scopes' routes
TRAIN = "train"  # datasets, jobs, fine-tuning
INFER = "infer"  # /v1 inference routes and feedback
READ = "read"  # GET listings, /metrics

SCOPES: tuple[str, ...] = (ADMIN, TRAIN, INFER, READ)
ALL_SCOPES: frozenset[str] = frozenset(SCOPES)


def check_scopes(scopes: Iterable[str]) -> list[str]:
    """Validate and normalise a scope list (sorted, no duplicates); at least one scope is required."""
    wanted = sorted({str(s).strip().lower() for s in scopes})
    unknown = [s for s in wanted if s not in ALL_SCOPES]
    if unknown:
        raise InvalidInput(f"unknown scope(s) {', '.join(map(repr, unknown))}; known scopes: {', '.join(SCOPES)}",
                           param="scopes")
    if not wanted:
        raise InvalidInput(f"a key needs at least one scope: {', '.join(SCOPES)}", param="scopes")
    return wanted


def allows(granted: Iterable[str], needed: str) -> bool:
    """Whether a key holding ``granted`` may use a route needing ``needed``; admin may do anything."""
    granted = set(granted)
    return ADMIN in granted or needed in granted
