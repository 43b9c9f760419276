"""Tools in a chat: the functions a model may call, the calls it made, and the text form of both.

Templates that know tools (their source mentions ``tools``) render them their own way. For the others
llmos writes the tools into the system message and shows calls in the widely trained ``<tool_call>``
form (Hermes, Qwen, SmolLM3): one JSON object ``{"name": ..., "arguments": {...}}`` between tags. The
same form is what replies are parsed from and what constrained decoding forces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
EMPTY_PARAMETERS: dict[str, object] = {"type": "object", "properties": {}}

_EXAMPLE_CALL = '{"name": "function_name", "arguments": {"argument": "value"}}'
_TOOLS_PREAMBLE = (
    "You can call functions to help answer. These are the functions, as JSON schemas:\n<tools>\n{tools}\n</tools>\n"
    "To call a function, answer with a JSON object holding its name and arguments between "
    f"{TOOL_CALL_OPEN} and {TOOL_CALL_CLOSE} tags, like this:\n{TOOL_CALL_OPEN}\n{_EXAMPLE_CALL}\n{TOOL_CALL_CLOSE}"
)


@dataclass
class ToolDef:
    """A function the model may call; ``parameters`` is a JSON schema of its arguments object."""

    name: str
    description: str = ""
    parameters: dict[str, object] = field(default_factory=lambda: dict(EMPTY_PARAMETERS))

    def openai(self) -> dict[str, object]:
        """OpenAI's (and chat templates') shape: ``{"type": "function", "function": {...}}``."""
        fn: dict[str, object] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            fn["description"] = self.description
        return {"type": "function", "function": fn}


@dataclass
class ToolCall:
    """One call the model made; ``arguments`` is JSON text, as in OpenAI's wire format."""

    id: str
    name: str
    arguments: str

    def arguments_object(self) -> object:
        try:
            return json.loads(self.arguments)
        except ValueError:
            return self.arguments


def call_text(call: ToolCall) -> str:
    """A call in the ``<tool_call>`` form, as a template without tool support is shown it."""
    body = json.dumps({"name": call.name, "arguments": call.arguments_object()}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"


def tools_preamble(tools: list[ToolDef]) -> str:
    """The system-message text that offers ``tools`` to a model whose template cannot."""
    listed = "\n".join(json.dumps(t.openai(), ensure_ascii=False) for t in tools)
    return _TOOLS_PREAMBLE.replace("{tools}", listed)


def template_knows_tools(chat_template: str) -> bool:
    """Whether a chat template renders a ``tools`` list (and tool calls) itself."""
    return "tools" in chat_template and "tool_calls" in chat_template
