"""Output constraints from what a caller asks for: any JSON object, a JSON schema, a call of one tool.

Engine-independent: this builds ``OutputConstraint`` values (a JSON schema between a literal prefix and
suffix); each engine compiles them into its own grammar and enforces them token by token.
"""

from __future__ import annotations

import json

from llmos.engines.chat import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ToolDef
from llmos.engines.types import OutputConstraint
from llmos.errors import InvalidInput

MAX_SCHEMA_CHARS = 64_000  # a schema this long is a mistake, and compiling it would stall the engine
_ANY_OBJECT: dict[str, object] = {"type": "object"}


def schema_text(schema: object, *, what: str = "the JSON schema") -> str:
    """Canonical JSON text of a schema. Key order is kept: it is the order the output writes properties in."""
    if not isinstance(schema, dict):
        raise InvalidInput(f"{what} must be a JSON object, got {type(schema).__name__}")
    text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    if len(text) > MAX_SCHEMA_CHARS:
        raise InvalidInput(f"{what} is {len(text)} characters long; the limit is {MAX_SCHEMA_CHARS}")
    return text


def json_object() -> OutputConstraint:
    """Any JSON object (``response_format: {"type": "json_object"}``)."""
    return OutputConstraint(schema_text(_ANY_OBJECT))


def json_schema(schema: object) -> OutputConstraint:
    """One JSON value valid against ``schema`` (``response_format: {"type": "json_schema"}``)."""
    return OutputConstraint(schema_text(schema))


def tool_call(tools: list[ToolDef]) -> OutputConstraint:
    """Exactly one call of one of ``tools``, in the ``<tool_call>`` form, its arguments valid against the
    function's parameters schema (``tool_choice: "required"``, or a named function with one tool)."""
    if not tools:
        raise InvalidInput("a tool call was required but no tools were given", param="tools")
    options = [_call_schema(t) for t in tools]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return OutputConstraint(schema_text(schema, what="the tools' parameters schemas"),
                            prefix=f"{TOOL_CALL_OPEN}\n", suffix=f"\n{TOOL_CALL_CLOSE}")


def tool_calls_in_text(tools: list[ToolDef]) -> OutputConstraint:
    """A free reply in which every ``<tool_call>`` the model opens must be a valid call of one of
    ``tools`` (``tool_choice: "auto"``): the model decides whether to call, never how badly."""
    whole = tool_call(tools)
    return OutputConstraint(whole.json_schema, whole.prefix, whole.suffix, trigger=TOOL_CALL_OPEN)


def _call_schema(tool: ToolDef) -> dict[str, object]:
    # "name" comes first so the model writes which function before its arguments.
    return {"type": "object",
            "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
            "required": ["name", "arguments"], "additionalProperties": False}
