"""Constrained output and log-probabilities on the llama.cpp engine (SmolLM2 Q4_1): llguidance grammars
in llama.cpp's sampler, token probabilities from its own logits."""

from __future__ import annotations

import json
import math

import jsonschema_rs
import pytest

from llmos.engines import constrain
from llmos.engines.base import ChatMessage
from llmos.engines.chat import ToolDef
from llmos.engines.llamacpp import LlamaCppEngine
from llmos.engines.types import SamplingParams, SequenceSpec
from llmos.errors import InvalidInput
from tests.engines.test_llamacpp import _collect, _text, llama  # noqa: F401 - the module's engine fixture

PERSON = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0}},
          "required": ["name", "age"]}
WEATHER = ToolDef("get_weather", "The weather in a city now",
                  {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]})


@pytest.fixture(scope="module")
def ask(llama: LlamaCppEngine) -> list[int]:  # noqa: F811
    return llama.encode_chat([ChatMessage("user", "Describe a person as JSON with a name and an age.")])


@pytest.mark.slow
def test_sampled_sequences_all_follow_the_schema_beside_a_free_one(llama: LlamaCppEngine, ask) -> None:  # noqa: F811
    c = constrain.json_schema(PERSON)
    specs = [SequenceSpec(f"j{i}", ask, SamplingParams(max_tokens=40, temperature=1.0, seed=i, constraint=c))
             for i in range(4)]
    free = SequenceSpec("free", ask, SamplingParams(max_tokens=12))
    got = _collect(llama, [*specs, free])
    validator = jsonschema_rs.validator_for(PERSON)
    for i in range(4):
        assert validator.is_valid(json.loads(_text(got[f"j{i}"]))), _text(got[f"j{i}"])
    assert not _text(got["free"]).startswith("{")  # left alone, the model writes prose first


def test_a_required_tool_call_is_a_valid_call(llama: LlamaCppEngine) -> None:  # noqa: F811
    prompt = llama.encode_chat([ChatMessage("user", "What is the weather in Paris?")])
    c = constrain.tool_call([WEATHER])
    llama.check_constraint(c)
    text = _text(_collect(llama, [SequenceSpec("t", prompt, SamplingParams(max_tokens=48, constraint=c))])["t"])
    assert text.startswith("<tool_call>\n") and text.endswith("\n</tool_call>"), text
    call = json.loads(text.removeprefix("<tool_call>\n").removesuffix("\n</tool_call>"))
    assert call["name"] == "get_weather" and isinstance(call["arguments"]["city"], str)


def test_a_call_inside_a_free_reply_is_refused_here_not_run_free(llama: LlamaCppEngine) -> None:  # noqa: F811
    with pytest.raises(InvalidInput, match="hf engine"):
        llama.check_constraint(constrain.tool_calls_in_text([WEATHER]))


@pytest.mark.parametrize("schema,needle", [
    ({"type": "strin"}, "strin"),
    ({"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}}, "missing"),
    ({"type": "string", "pattern": "(("}, "parenthesis"),
])
def test_a_schema_that_cannot_be_enforced_is_invalid_input(llama: LlamaCppEngine, schema, needle) -> None:  # noqa: F811
    with pytest.raises(InvalidInput, match=needle) as err:
        llama.check_constraint(constrain.json_schema(schema))
    assert ".cc:" not in err.value.message


def test_logprobs_match_the_tokens_and_the_distribution(llama: LlamaCppEngine, ask) -> None:  # noqa: F811
    outs = _collect(llama, [SequenceSpec("lp", ask, SamplingParams(max_tokens=12, logprobs=3))])["lp"]
    entries = [o.logprobs for o in outs if o.logprobs is not None]
    assert len(entries) == 12 and "".join(lp.chosen.token for lp in entries) == _text(outs)
    for lp in entries:
        values = [t.logprob for t in lp.top]
        assert len(values) == 3 and values == sorted(values, reverse=True)
        assert lp.top[0].token == lp.chosen.token and lp.chosen.logprob == pytest.approx(values[0])  # greedy
        assert 0 < sum(math.exp(v) for v in values) <= 1 + 1e-5


def test_constrained_logprobs_are_the_models_own(llama: LlamaCppEngine, ask) -> None:  # noqa: F811
    """The first token of a constrained answer is forced to '{'; its log-probability says how unlikely it was."""
    c = constrain.json_object()
    outs = _collect(llama, [SequenceSpec("c", ask, SamplingParams(max_tokens=3, logprobs=1, constraint=c))])["c"]
    first = next(o.logprobs for o in outs if o.logprobs is not None)
    assert first.chosen.token.startswith("{") and first.top[0].token != first.chosen.token
    assert first.chosen.logprob < first.top[0].logprob


def test_zero_alternatives_still_give_the_chosen_token(llama: LlamaCppEngine, ask) -> None:  # noqa: F811
    outs = _collect(llama, [SequenceSpec("z", ask, SamplingParams(max_tokens=4, logprobs=0))])["z"]
    entries = [o.logprobs for o in outs if o.logprobs is not None]
    assert len(entries) == 4 and all(lp.top == [] and lp.chosen.logprob <= 0 for lp in entries)


