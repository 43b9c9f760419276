"""The column names llmos recognises for each field of a row, across the datasets people bring."""

from __future__ import annotations

ALIASES: dict[str, tuple[str, ...]] = {
    "text": ("text", "sentence", "content", "review", "document", "utterance", "message", "body", "tweet",
             "comment", "sms"),
    "label": ("label", "category", "intent", "class", "target", "sentiment", "labels"),
    "instruction": ("instruction", "prompt", "question", "query"),
    "input": ("input", "context"),
    "output": ("output", "response", "completion", "answer", "answers", "chosen"),
    "rejected": ("rejected", "rejected_response"),  # a worse answer: the row is a preference pair too
    "messages": ("messages", "conversations", "conversation", "chat"),
    "tokens": ("tokens", "words"),
    "tags": ("tags", "ner_tags", "ner", "pos_tags", "labels"),
}


def known_column(name: str) -> bool:
    low = name.strip().lower()
    return any(low in names for names in ALIASES.values())
