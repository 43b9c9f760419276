"""Turning chat messages into prompt ids with the chat template stored with the model."""

from __future__ import annotations

from typing import Any

from llmos.engines.base import ChatMessage
from llmos.errors import InvalidInput


def chat_prompt_ids(tokenizer: Any, chat_template: str | None, messages: list[ChatMessage], model: str) -> list[int]:
    if not chat_template:
        raise InvalidInput(f"model {model!r} has no chat template; send a plain prompt (/v1/completions) instead")
    chat = [{"role": m.role, "content": m.content} for m in messages]
    text = tokenizer.apply_chat_template(chat, chat_template=chat_template, tokenize=False,
                                         add_generation_prompt=True)
    # The template already wrote every special token it wants.
    return list(tokenizer.encode(text, add_special_tokens=False))
