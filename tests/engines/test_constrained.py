"""Constrained decoding and log-probabilities on the real SmolLM2: per-row grammars in a shared batch."""

from __future__ import annotations

import json
import math

import jsonschema_rs
import pytest

from llmos.engines import constrain
from llmos.engines.base import ChatMessage
from llmos.engines.chat import ToolDef
from llmos.engines.hf import HFEngine
from llmos.engines.prompts import chat_prompt_ids
from llmos.errors import InvalidInput

from .helpers import run, run_alone, spec

PERSON = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0}},
          "required": ["name", "age"]}
WEATHER = ToolDef("get_weather", "The weather in a city now",
                  {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]})


@pytest.fixture(scope="module")
def ask(smol_engine: HFEngine) -> list[int]:
    return smol_engine.encode_chat([ChatMessage("user", "Describe a person as JSON with a name and an age.")])


def test_sampled_rows_all_follow_the_schema_and_the_free_row_is_untouched(smol_engine, ask):
    c = constrain.json_schema(PERSON)
    specs = [spec(f"j{i}", ask, max_tokens=30, temperature=1.0, seed=i, constraint=c) for i in range(5)]
    free = spec("free", ask, max_tokens=12)
    got = run(smol_engine, [*specs, free])
    validator = jsonschema_rs.validator_for(PERSON)
    for i in range(5):
        assert validator.is_valid(json.loads(got[f"j{i}"].text)), got[f"j{i}"].text
    assert got["free"].tokens == run_alone(smol_engine, [free])["free"].tokens
    assert not got["free"].text.startswith("{")  # left alone, the model writes prose first


def test_a_required_tool_call_is_a_valid_call(smol_engine):
    tok, template = smol_engine._m.tokenizer, smol_engine._m.chat_template
    prompt = chat_prompt_ids(tok, template, [ChatMessage("user", "What is the weather in Paris?")], "smol", [WEATHER])
    assert "get_weather" in tok.decode(prompt)  # the tools reach a template that cannot render them
    got = run(smol_engine, [spec("t", prompt, max_tokens=40, constraint=constrain.tool_call([WEATHER]))])["t"]
    assert got.text.startswith("<tool_call>\n") and got.text.endswith("\n</tool_call>"), got.text
    call = json.loads(got.text.removeprefix("<tool_call>\n").removesuffix("\n</tool_call>"))
    assert call["name"] == "get_weather" and isinstance(call["arguments"]["city"], str)


@pytest.mark.parametrize("schema,needle", [
    ({"type": "strin"}, "strin"),
    ({"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}}, "missing"),
    ({"type": "string", "pattern": "(("}, "parenthesis"),
])
def test_a_schema_xgrammar_cannot_compile_is_invalid_input_with_its_reason(smol_engine, schema, needle):
    with pytest.raises(InvalidInput, match=needle) as err:
        smol_engine.check_constraint(constrain.json_schema(schema))
    assert ".cc:" not in err.value.message


def test_logprobs_match_the_tokens_and_the_distribution(smol_engine, ask):
    got = run(smol_engine, [spec("lp", ask, max_tokens=12, logprobs=3)])["lp"]
    assert len(got.logprobs) == 12 and "".join(lp.chosen.token for lp in got.logprobs) == got.text
    for lp in got.logprobs:
        values = [t.logprob for t in lp.top]
        assert len(values) == 3 and values == sorted(values, reverse=True)
        assert lp.top[0].token == lp.chosen.token and lp.chosen.logprob == pytest.approx(values[0])  # greedy
        assert 0 < sum(math.exp(v) for v in values) <= 1 + 1e-5
        assert bytes(lp.chosen.bytes).decode() == lp.chosen.token


def test_constrained_logprobs_are_the_models_own(smol_engine, ask):
    """The first token of a constrained answer is forced to '{'; its log-probability says how unlikely it was."""
    got = run(smol_engine, [spec("c", ask, max_tokens=3, logprobs=1, constraint=constrain.json_object())])["c"]
    first = got.logprobs[0]
    assert first.chosen.token.startswith("{") and first.top[0].token != first.chosen.token
    assert first.chosen.logprob < first.top[0].logprob


def test_calls_opened_in_a_free_reply_must_be_valid(smol_engine, ask):
    c = constrain.tool_calls_in_text([WEATHER])
    matcher = smol_engine._grammar.matcher(c)
    assert matcher.accept_string('Let me look. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}'
                                 '\n</tool_call> Done.')
    assert not smol_engine._grammar.matcher(c).accept_string('<tool_call>\n{"name": "get_time"')
    assert not smol_engine._grammar.matcher(c).accept_string('<tool_call>\n{"name": "get_weather", "arguments": {}}')
    # A reply that never opens a call is the model's own, token for token.
    free = spec("free", ask, max_tokens=10)
    assert run(smol_engine, [spec("lazy", ask, max_tokens=10, constraint=c)])["lazy"].tokens == \
        run(smol_engine, [free])["free"].tokens
