"""Tools in chat completions: what the prompt offers, what the output is held to, and the reply parsed
back into ``tool_calls`` (whole, or incrementally while streaming).

Replies are read in the ``<tool_call>`` form (``llmos.engines.chat``): each block holds one JSON object
with the function's ``name`` and its ``arguments``. A block that does not parse, or names a function that
was not offered, stays in the content as text: a caller never gets a call it cannot make.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from llmos.api.openai_schemas import ChatCompletionIn, ChatMessageIn, NamedToolChoice
from llmos.engines import constrain
from llmos.engines.base import ChatMessage
from llmos.engines.chat import EMPTY_PARAMETERS, TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ToolCall, ToolDef
from llmos.engines.types import OutputConstraint
from llmos.errors import InvalidInput


@dataclass
class ToolPlan:
    """What a chat request's tools mean for one generation."""

    offered: list[ToolDef] = field(default_factory=list)  # rendered into the prompt
    constraint: OutputConstraint | None = None  # the output is held to this
    names: frozenset[str] = frozenset()  # calls parsed from the reply (empty: none are)
    single: bool = False  # at most one call (parallel_tool_calls false, or a forced call)


def chat_messages(messages: list[ChatMessageIn]) -> list[ChatMessage]:
    out = []
    for m in messages:
        calls = [ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or []]
        out.append(ChatMessage(m.role, m.text(), calls, m.tool_call_id))
    return out


def plan(body: ChatCompletionIn) -> ToolPlan:
    """Tools to offer, the constraint (a forced call, or a response format) and which calls to parse."""
    tools = [ToolDef(t.function.name, t.function.description, t.function.parameters or dict(EMPTY_PARAMETERS))
             for t in body.tools or []]
    choice = body.tool_choice or "auto"
    fmt = body.response_format
    json_format = _format_constraint(body)
    if not tools or choice == "none":
        return ToolPlan(constraint=json_format)
    if choice == "auto":  # a response format, when given, wins: the reply is that JSON, not a call
        if json_format is not None:
            return ToolPlan(tools, json_format)
        return ToolPlan(tools, constrain.tool_calls_in_text(tools), frozenset(t.name for t in tools),
                        single=body.parallel_tool_calls is False)
    if fmt is not None and fmt.type != "text":
        raise InvalidInput("a forced tool call (tool_choice required or a function) and a JSON response_format "
                           "cannot both hold; drop one", param="tool_choice")
    forced = [t for t in tools if isinstance(choice, NamedToolChoice) and t.name == choice.function.name] or tools
    return ToolPlan(tools, constrain.tool_call(forced), frozenset(t.name for t in forced), single=True)


def _format_constraint(body: ChatCompletionIn) -> OutputConstraint | None:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return constrain.json_object()
    assert fmt.json_schema is not None
    return constrain.json_schema(fmt.json_schema.schema_)


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def parse_call(block: str, names: frozenset[str]) -> ToolCall | None:
    """One ``<tool_call>`` body -> a call, or None when it is not a call of an offered function."""
    try:
        data = json.loads(block)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("name") not in names:
        return None
    args = data.get("arguments", data.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as JSON text
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(new_call_id(), data["name"], json.dumps(args, ensure_ascii=False))


def split_calls(text: str, names: frozenset[str], single: bool = False) -> tuple[str, list[ToolCall]]:
    """A whole reply -> (its content without the parsed blocks, the calls)."""
    parser = ToolCallStream(names, single)
    pieces = [*parser.push(text), *parser.finish()]
    return "".join(p for p in pieces if isinstance(p, str)), [p for p in pieces if isinstance(p, ToolCall)]


class ToolCallStream:
    """Splits streamed text into content and calls. Text that may be the start of a ``<tool_call>`` tag
    is held back until it is clearly not one; a block is held until it closes, then parsed."""

    def __init__(self, names: frozenset[str], single: bool = False) -> None:
        self._names = names
        self._single = single
        self._buf = ""
        self._inside = False
        self.calls = 0

    def push(self, text: str) -> list[str | ToolCall]:
        self._buf += text
        return [p for p in self._scan() if p != ""]

    def _scan(self) -> list[str | ToolCall]:
        out: list[str | ToolCall] = []
        while True:
            if self._inside:
                end = self._buf.find(TOOL_CALL_CLOSE)
                if end < 0:
                    return out
                out.append(self._close(self._buf[:end]))
                self._buf, self._inside = self._buf[end + len(TOOL_CALL_CLOSE):], False
                continue
            start = self._buf.find(TOOL_CALL_OPEN)
            if start < 0 or (self._single and self.calls):
                keep = 0 if self._single and self.calls else _partial_tag(self._buf)
                out.append(self._buf[:len(self._buf) - keep])
                self._buf = self._buf[len(self._buf) - keep:]
                return out
            out.append(self._buf[:start])
            self._buf, self._inside = self._buf[start + len(TOOL_CALL_OPEN):], True

    def finish(self) -> list[str | ToolCall]:
        """The end of the reply: an unclosed block is content, unless it parses whole."""
        rest, self._buf = self._buf, ""
        if self._inside:
            self._inside = False
            call = self._close(rest)
            return [call] if isinstance(call, ToolCall) else [f"{TOOL_CALL_OPEN}{rest}"]
        return [rest] if rest else []

    def _close(self, block: str) -> str | ToolCall:
        call = None if self._single and self.calls else parse_call(block.strip(), self._names)
        if call is None:
            return f"{TOOL_CALL_OPEN}{block}{TOOL_CALL_CLOSE}"
        self.calls += 1
        return call


def _partial_tag(text: str) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of the opening tag."""
    for size in range(min(len(TOOL_CALL_OPEN) - 1, len(text)), 0, -1):
        if TOOL_CALL_OPEN.startswith(text[-size:]):
            return size
    return 0
