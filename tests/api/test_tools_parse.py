"""Replies -> tool calls: whole, and split across stream deltas at every possible place."""

import json

import pytest

from llmos.api.openai_schemas import ChatCompletionIn
from llmos.api.tools import ToolCallStream, plan, split_calls
from llmos.engines.chat import ToolCall

NAMES = frozenset({"get_weather", "add"})
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def test_a_reply_of_calls_and_text() -> None:
    content, calls = split_calls(f"Let me check.\n{CALL}\n<tool_call>{{\"name\": \"add\", \"parameters\": "
                                 f"{{\"a\": 1}}}}</tool_call>", NAMES)
    assert content == "Let me check.\n\n"
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"}), ("add", {"a": 1})]
    assert all(c.id.startswith("call_") for c in calls) and calls[0].id != calls[1].id


@pytest.mark.parametrize("text", [
    '<tool_call>\n{"name": "delete_everything", "arguments": {}}\n</tool_call>',  # not offered
    '<tool_call>\n{"name": "add", "arguments": {"a": 1\n</tool_call>',  # not JSON
    '<tool_call>\n{"name": "add", "arguments": [1, 2]}\n</tool_call>',  # arguments not an object
    '<tool_call>\n{"name": "add", "arguments": {"a": 1}}',  # cut off before the tag closed... but whole JSON
])
def test_what_is_not_a_valid_call_stays_text(text: str) -> None:
    content, calls = split_calls(text, NAMES)
    if text.endswith("}}"):  # an unclosed block whose JSON is whole is still a call
        assert [c.name for c in calls] == ["add"] and content == ""
    else:
        assert calls == [] and content == text


def test_single_keeps_only_the_first_call() -> None:
    content, calls = split_calls(CALL + CALL, NAMES, single=True)
    assert len(calls) == 1 and content == CALL


def test_stream_split_anywhere_gives_the_same_result() -> None:
    text = f"ok <tool_c {CALL} done <tool"
    whole = split_calls(text, NAMES)
    for cut in range(1, len(text)):
        parser = ToolCallStream(NAMES)
        pieces = parser.push(text[:cut]) + parser.push(text[cut:]) + parser.finish()
        content = "".join(p for p in pieces if isinstance(p, str))
        calls = [p for p in pieces if isinstance(p, ToolCall)]
        assert content == whole[0] == "ok <tool_c  done <tool"
        assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in whole[1]]


def test_text_that_may_become_a_tag_is_held_back_not_lost() -> None:
    parser = ToolCallStream(NAMES)
    assert parser.push("Hello <tool") == ["Hello "]
    assert parser.push("box>") == ["<toolbox>"]


def _body(**kw: object) -> ChatCompletionIn:
    tools = [{"type": "function", "function": {"name": n}} for n in sorted(NAMES)]
    return ChatCompletionIn(model="m", messages=[{"role": "user", "content": "hi"}], tools=tools, **kw)


def test_tool_choice_plans() -> None:
    auto = plan(_body())
    assert auto.names == NAMES and len(auto.offered) == 2
    assert auto.constraint is not None and auto.constraint.trigger == "<tool_call>"  # calls it opens must be valid
    assert plan(_body(tool_choice="none")).names == frozenset()
    required = plan(_body(tool_choice="required"))
    assert required.single and required.constraint is not None and '"anyOf"' in required.constraint.json_schema
    named = plan(_body(tool_choice={"type": "function", "function": {"name": "add"}}))
    assert named.names == {"add"} and '{"const":"add"}' in named.constraint.json_schema
    assert len(named.offered) == 2  # the prompt still shows every tool
    fmt = plan(_body(response_format={"type": "json_object"}))
    assert fmt.names == frozenset() and fmt.constraint is not None
