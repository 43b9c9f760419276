"""Tokenisation at the kernel's front door, so engines receive ids and may live elsewhere."""

from __future__ import annotations

import threading
from typing import Any

from llmos.engines.base import ChatMessage
from llmos.engines.chat import ToolDef
from llmos.engines.prompts import chat_prompt_ids
from llmos.store.manifest import ModelInfo
from llmos.store.registry import Registry


class PromptCodec:
    """A model's tokenizer plus its stored chat template."""

    def __init__(self, info: ModelInfo, tokenizer: Any) -> None:
        self.info = info
        self.tokenizer = tokenizer
        self.chat_template = info.manifest.chat_template

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def encode_chat(self, messages: list[ChatMessage], tools: list[ToolDef] | None = None) -> list[int]:
        return chat_prompt_ids(self.tokenizer, self.chat_template, messages, self.info.ref, tools)

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))


class CodecCache:
    """One PromptCodec per manifest digest, loaded on first use."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._codecs: dict[str, PromptCodec] = {}
        self._lock = threading.Lock()

    def loaded(self, info: ModelInfo) -> PromptCodec | None:
        """The codec for ``info`` when it is already loaded (no file is read: safe on an event loop)."""
        with self._lock:
            return self._codecs.get(info.digest)

    def get(self, info: ModelInfo, base: ModelInfo) -> PromptCodec:
        """The codec for ``info``; an adapter uses its base's tokenizer and its own chat template."""
        with self._lock:
            codec = self._codecs.get(info.digest)
            if codec is None:
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(self.registry.snapshot(base))
                codec = self._codecs[info.digest] = PromptCodec(info, tok)
            return codec
