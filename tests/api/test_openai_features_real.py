"""The official openai client against the daemon and the real SmolLM2, on the llama.cpp engine (its Q4_1
GGUF) and on the transformers engine: tools, structured output, logprobs, n, seed and stop, and the 400s
for what llmos does not support."""

import asyncio
import json
import math
from collections.abc import Iterator

import jsonschema_rs
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from llmos.daemon import create_app
from llmos.kernel.core import Kernel
from llmos.runtime import Runtime
from tests.api.server import serving

pytestmark = pytest.mark.slow
SMOL = "smollm2-135m-instruct"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}},
                   "required": ["city"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": -999, "maximum": 999},
                                                    "b": {"type": "integer", "minimum": -999, "maximum": 999}},
                   "required": ["a", "b"], "additionalProperties": False}}}
ANSWER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16},
                                           "rating": {"type": "integer", "minimum": 1, "maximum": 5}},
          "required": ["city", "rating"], "additionalProperties": False}
PARIS = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module", params=["llamacpp", "hf"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def url(engine: str, builtin_runtime: Runtime) -> Iterator[str]:
    """The daemon with SmolLM2 generating on each engine in turn: every feature works on both."""
    settings = builtin_runtime.settings.model_copy(update={"engine": engine})
    kernel = Kernel(settings, builtin_runtime.store.registry)
    with serving(create_app(builtin_runtime, kernel)) as base:
        yield base + "/v1"


@pytest.fixture(scope="module")
def client(url: str) -> OpenAI:
    return OpenAI(base_url=url, api_key="unused", max_retries=0)


def _valid(tool: dict, arguments: str) -> bool:
    return jsonschema_rs.validator_for(tool["function"]["parameters"]).is_valid(json.loads(arguments))


def test_a_required_tool_call_comes_back_parsed(client: OpenAI) -> None:
    reply = client.chat.completions.create(model=SMOL, messages=PARIS, tools=[WEATHER], tool_choice="required",
                                           max_tokens=40, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert _valid(WEATHER, call.function.arguments)

    # The assistant turn goes back as the client returned it, with the tool's answer after it.
    messages = [*PARIS, choice.message, {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'}]
    follow = client.chat.completions.create(model=SMOL, messages=messages, tools=[WEATHER], max_tokens=12,
                                            temperature=0)
    assert follow.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_a_named_function_is_the_one_called_and_streams_as_a_delta(client: OpenAI) -> None:
    question = [{"role": "user", "content": "What is 12 plus 30?"}]
    named = {"type": "function", "function": {"name": "add"}}
    reply = client.chat.completions.create(model=SMOL, messages=question, tools=[WEATHER, ADD], tool_choice=named,
                                           max_tokens=40, temperature=0)
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "add" and _valid(ADD, call.function.arguments)

    stream = client.chat.completions.create(model=SMOL, messages=question, tools=[WEATHER, ADD], tool_choice=named,
                                            max_tokens=40, temperature=0, stream=True)
    deltas = [c.choices[0].delta for c in stream if c.choices]
    streamed = [t for d in deltas for t in d.tool_calls or []]
    assert len(streamed) == 1 and streamed[0].index == 0
    assert (streamed[0].function.name, json.loads(streamed[0].function.arguments)) == (
        "add", json.loads(call.function.arguments))
    assert not any(d.content for d in deltas)  # the <tool_call> text itself never reaches the client


def test_json_schema_100_generations_100_valid(url: str) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "rating", "strict": True, "schema": ANSWER}}
    validator = jsonschema_rs.validator_for(ANSWER)

    async def one(c: AsyncOpenAI, seed: int):  # type: ignore[no-untyped-def]
        return await c.chat.completions.create(
            model=SMOL, messages=[{"role": "system", "content": "Reply in JSON."},  # short: the prompt is most
                                  {"role": "user", "content": "Rate a city from 1 to 5."}],  # of the work
            response_format=fmt, n=10, seed=seed, temperature=1.0, max_tokens=32)

    async def run() -> list:  # type: ignore[type-arg]
        async with AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600) as c:
            first = await asyncio.gather(*(one(c, s) for s in range(5)))  # 50 sequences fit the queue at once
            return [*first, *await asyncio.gather(*(one(c, s) for s in range(5, 10)))]

    choices = [ch for reply in asyncio.run(run()) for ch in reply.choices]
    assert len(choices) == 100
    values = [json.loads(ch.message.content) for ch in choices]
    assert all(ch.finish_reason == "stop" for ch in choices)
    assert sum(validator.is_valid(v) for v in values) == 100
    assert len({json.dumps(v) for v in values}) > 10  # sampled, not one answer repeated


def test_json_object_and_a_schema_the_library_cannot_compile(client: OpenAI) -> None:
    reply = client.chat.completions.create(model=SMOL, messages=PARIS, response_format={"type": "json_object"},
                                           max_tokens=40, temperature=0)
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
    bad = {"type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": "strng"}}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=SMOL, messages=PARIS, response_format=bad, max_tokens=5)
    assert "strng" in err.value.message and err.value.body["param"] == "response_format"


def test_chat_logprobs_match_the_text_whole_and_streamed(client: OpenAI) -> None:
    args = dict(model=SMOL, messages=PARIS, max_tokens=16, temperature=0, logprobs=True, top_logprobs=3)
    reply = client.chat.completions.create(**args)
    entries = reply.choices[0].logprobs.content
    assert "".join(e.token for e in entries) == reply.choices[0].message.content
    assert len(entries) == reply.usage.completion_tokens or reply.choices[0].finish_reason == "stop"
    for e in entries:
        tops = [t.logprob for t in e.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and e.token == e.top_logprobs[0].token
        assert e.logprob <= 0 and 0 < sum(math.exp(t) for t in tops) <= 1 + 1e-5
        assert bytes(e.bytes).decode() == e.token

    chunks = [c for c in client.chat.completions.create(**args, stream=True) if c.choices]
    streamed = [e for c in chunks if c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [(e.token, round(e.logprob, 4)) for e in entries]


def test_completion_logprobs_in_the_legacy_shape(client: OpenAI) -> None:
    out = client.completions.create(model=SMOL, prompt="The capital of France is", max_tokens=6, temperature=0,
                                    logprobs=2)
    lp = out.choices[0].logprobs
    assert "".join(lp.tokens) == out.choices[0].text and len(lp.token_logprobs) == len(lp.tokens)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    assert all(len(top) <= 2 and max(top.values()) == pytest.approx(p, abs=1e-4)
               for top, p in zip(lp.top_logprobs, lp.token_logprobs))


def test_n_choices_seed_and_stop(client: OpenAI, engine: str) -> None:
    args = dict(model=SMOL, messages=[{"role": "user", "content": "Tell me a short story."}], max_tokens=12,
                temperature=1.0, seed=7)
    reply = client.chat.completions.create(**args, n=3)
    texts = [c.message.content for c in reply.choices]
    assert [c.index for c in reply.choices] == [0, 1, 2] and len(set(texts)) > 1
    again = [client.chat.completions.create(**args).choices[0].message.content for _ in range(2)]
    assert again[0] == again[1]  # a seed asked alone twice: the same text
    if engine == "hf":  # each row samples with its own generator and batch-mates change no logit
        assert again[0] == texts[0]
    stopped = client.chat.completions.create(model=SMOL, messages=PARIS, max_tokens=40, temperature=0, stop=["."],
                                             max_completion_tokens=40)
    assert "." not in stopped.choices[0].message.content and stopped.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("extra,param", [
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"logit_bias": {"1": 5}}, "logit_bias"),
    ({"extra_body": {"guided_json": {}}}, "guided_json"),
])
def test_unsupported_fields_are_refused_through_the_client(client: OpenAI, extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=SMOL, messages=PARIS, max_tokens=4, **extra)
    assert err.value.body["param"] == param and param in err.value.message


@pytest.mark.parametrize("call,param", [
    (lambda c: c.completions.create(model=SMOL, prompt="Hi", max_tokens=2, echo=True), "echo"),
    (lambda c: c.completions.create(model=SMOL, prompt="Hi", max_tokens=2, best_of=2), "best_of"),
    (lambda c: c.completions.create(model=SMOL, prompt="Hi", max_tokens=2, suffix="!"), "suffix"),
    (lambda c: c.embeddings.create(model="minilm-l6", input="hi", dimensions=32), "dimensions"),
])
def test_unsupported_fields_of_completions_and_embeddings(client: OpenAI, call, param: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.BadRequestError) as err:
        call(client)
    assert err.value.body["param"] == param
