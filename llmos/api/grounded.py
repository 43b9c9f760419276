"""Grounded chat for /v1/chat/completions: the ``knowledge`` field names a knowledge base of the
caller's tenant; its best passages for the last user message join the prompt as a system message."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from llmos.api.deps import Caller
from llmos.engines.base import ChatMessage
from llmos.kb import KernelEmbedder, KnowledgeBases, search
from llmos.kb.grounding import PASSAGES, Citation, ground, question_of
from llmos.kb.retrieval import MAX_QUERY_CHARS
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime


async def ground_chat(kernel: Kernel, runtime: Runtime, caller: Caller, name: str,
                      messages: list[ChatMessage]) -> tuple[list[ChatMessage], list[Citation]]:
    """The messages with the passages put in, and their citations; 404 for a knowledge base the caller
    does not have (another tenant's included)."""
    question = question_of(messages)[-MAX_QUERY_CHARS:]
    kbs = KnowledgeBases.of(runtime, caller.tenant)

    def retrieve() -> list:  # type: ignore[type-arg]
        embedder = KernelEmbedder.of(kernel, kbs.get(name).embed_model, caller.tenant)
        return search(kbs, name, question, embedder, k=PASSAGES).data

    return ground(messages, await run_in_threadpool(retrieve))
