"""Grounded chat: the passages found for the user's last message, put before the conversation as a
system message of numbered passages (the model's chat template renders it), and the citations the
answer returns (document, chunk, score) so a reader can check what it was given."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from llmos.engines.base import ChatMessage
from llmos.errors import InvalidInput
from llmos.kb.info import Passage

PASSAGES = 4  # a small model's context (2k tokens) holds four 800-character passages and a question
INSTRUCTION = ("Answer the user's question using only the numbered passages below. Cite the passages you use "
               "as [1], [2]. If the passages do not contain the answer, say that you do not know.")


@dataclass(frozen=True)
class Citation:
    index: int  # the passage's number in the prompt, as [index]
    document: str
    chunk: int
    chunk_id: int
    score: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def question_of(messages: list[ChatMessage]) -> str:
    """The last user message: what the passages are retrieved for."""
    for m in reversed(messages):
        if m.role == "user" and m.content.strip():
            return m.content
    raise InvalidInput("a grounded chat (knowledge) needs a user message to search for", param="messages")


def ground(messages: list[ChatMessage], passages: list[Passage]) -> tuple[list[ChatMessage], list[Citation]]:
    """The conversation with the passages as a system message, and their citations.

    A system message the caller sent stays first; the passages follow it in the same system turn, since
    many chat templates render only one system message.
    """
    numbered = "\n\n".join(f"[{i}] ({p.document})\n{p.text}" for i, p in enumerate(passages, start=1))
    block = f"{INSTRUCTION}\n\n{numbered}" if passages else "No passages were found for this question; say so."
    if messages and messages[0].role in ("system", "developer"):
        first = messages[0]
        grounded = [ChatMessage("system", f"{first.content}\n\n{block}"), *messages[1:]]
    else:
        grounded = [ChatMessage("system", block), *messages]
    citations = [Citation(i, p.document, p.chunk, p.chunk_id, round(p.score, 6)) for i, p in enumerate(passages, start=1)]
    return grounded, citations
