"""Turning chat messages into prompt ids with the chat template stored with the model."""

from __future__ import annotations

from typing import Any

from llmos.engines.base import ChatMessage
from llmos.engines.chat import ToolDef, call_text, template_knows_tools, tools_preamble
from llmos.errors import InvalidInput


def chat_prompt_ids(tokenizer: Any, chat_template: str | None, messages: list[ChatMessage], model: str,
                    tools: list[ToolDef] | None = None) -> list[int]:
    if not chat_template:
        raise InvalidInput(f"model {model!r} has no chat template; send a plain prompt (/v1/completions) instead")
    if template_knows_tools(chat_template):
        chat = [_native(m) for m in messages]
        extra = {"tools": [t.openai() for t in tools]} if tools else {}
    else:
        chat, extra = _without_tool_support(messages, tools or []), {}
    text = tokenizer.apply_chat_template(chat, chat_template=chat_template, tokenize=False,
                                         add_generation_prompt=True, **extra)
    # The template already wrote every special token it wants.
    return list(tokenizer.encode(text, add_special_tokens=False))


def _native(m: ChatMessage) -> dict[str, object]:
    """The message as templates that know tools expect it (arguments as objects, not JSON text)."""
    out: dict[str, object] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": c.arguments_object()}}
                             for c in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _without_tool_support(messages: list[ChatMessage], tools: list[ToolDef]) -> list[dict[str, str]]:
    """Tools in the system message, calls as ``<tool_call>`` text, results as a user turn."""
    chat: list[dict[str, str]] = []
    for m in messages:
        if m.role == "tool":
            chat.append({"role": "user", "content": f"<tool_response>\n{m.content}\n</tool_response>"})
        elif m.tool_calls:
            calls = "\n".join(call_text(c) for c in m.tool_calls)
            chat.append({"role": m.role, "content": f"{m.content}\n{calls}" if m.content else calls})
        else:
            chat.append({"role": m.role, "content": m.content})
    if tools:
        preamble = tools_preamble(tools)
        if chat and chat[0]["role"] == "system":
            chat[0] = {"role": "system", "content": f"{chat[0]['content']}\n\n{preamble}"}
        else:
            chat.insert(0, {"role": "system", "content": preamble})
    return chat
