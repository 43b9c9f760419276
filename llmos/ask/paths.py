"""The words of a request that look like file paths ("./reviews.csv", "/data/faq.md", "notes.txt").

``llmos ask`` uses this to find the files it may have to upload from its own machine (those that exist
there are sent with the request as ``local_files``); the planner uses it to tell a path that names no
such file from other words, and asks about it instead of planning a step that cannot run.
"""

from __future__ import annotations

import re

_SUFFIX = re.compile(r"\.(csv|tsv|jsonl|json|txt|md|markdown|html?|pdf|conll|text)$", re.IGNORECASE)
_STRIP = "\"'`,;:!?()[]<>"


def path_tokens(text: str) -> list[str]:
    """Each word that looks like a path, as written (quotes and trailing punctuation removed), in order."""
    out: list[str] = []
    for word in text.split():
        token = word.strip(_STRIP).rstrip(".")
        if not token or token.startswith(("http://", "https://")):
            continue
        if ("/" in token and len(token) > 1) or _SUFFIX.search(token):
            if token not in out:
                out.append(token)
    return out
