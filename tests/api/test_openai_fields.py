"""Every OpenAI field is honoured or refused by name: wire checks over fake engines (fast, no model)."""

import json

import pytest
from fastapi.testclient import TestClient

SMOL = "smollm2-135m-instruct"
CHAT = {"model": SMOL, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 3}
COMPLETION = {"model": SMOL, "prompt": "Once upon", "max_tokens": 3}
EMBED = {"model": "minilm-l6", "input": "a cat"}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def _events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


@pytest.mark.parametrize("route,body,param", [
    ("/v1/chat/completions", {**CHAT, "frequency_penalty": 0.5}, "frequency_penalty"),
    ("/v1/chat/completions", {**CHAT, "presence_penalty": -1}, "presence_penalty"),
    ("/v1/chat/completions", {**CHAT, "logit_bias": {"50256": -100}}, "logit_bias"),
    ("/v1/chat/completions", {**CHAT, "functions": [{"name": "f"}]}, "functions"),
    ("/v1/chat/completions", {**CHAT, "modalities": ["text", "audio"]}, "modalities"),
    ("/v1/chat/completions", {**CHAT, "reasoning_effort": "high"}, "reasoning_effort"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "x", "audio": {}}]}, "messages.0.audio"),
    ("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True, "x": 1}},
     "stream_options.x"),
    ("/v1/completions", {**COMPLETION, "echo": True}, "echo"),
    ("/v1/completions", {**COMPLETION, "best_of": 3}, "best_of"),
    ("/v1/completions", {**COMPLETION, "suffix": " the end"}, "suffix"),
    ("/v1/completions", {**COMPLETION, "frequency_penalty": 1.0}, "frequency_penalty"),
    ("/v1/completions", {**COMPLETION, "foo": 1}, "foo"),
    ("/v1/embeddings", {**EMBED, "dimensions": 64}, "dimensions"),
    ("/v1/embeddings", {**EMBED, "truncate": True}, "truncate"),
])
def test_an_unsupported_field_is_a_400_naming_it(fake_client: TestClient, route: str, body: dict, param: str) -> None:
    r = fake_client.post(route, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["param"] == param and param in error["message"]
    assert error["type"] == "invalid_request_error" and error["code"] == "unsupported_parameter"


@pytest.mark.parametrize("part,kind", [
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}, "image_url"),
    ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "input_audio"),
    ({"type": "file", "file": {"file_id": "file-1"}}, "file"),
])
def test_a_content_part_llmos_cannot_read_is_a_400_naming_its_type(fake_client: TestClient, part: dict,
                                                                     kind: str) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, part]}]
    r = fake_client.post("/v1/chat/completions", json={**CHAT, "messages": messages})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert kind in error["message"] and error["code"] == "unsupported_content"
    assert error["param"] == "messages.0.content"


def test_no_op_values_of_unsupported_fields_are_accepted(fake_client: TestClient) -> None:
    body = {**CHAT, "frequency_penalty": 0, "presence_penalty": 0.0, "logit_bias": {}, "parallel_tool_calls": True}
    assert fake_client.post("/v1/chat/completions", json=body).status_code == 200
    body = {**COMPLETION, "echo": False, "best_of": 1, "suffix": None}
    assert fake_client.post("/v1/completions", json=body).status_code == 200


def test_text_parts_are_joined(fake_client: TestClient, builtin_runtime) -> None:  # type: ignore[no-untyped-def]
    from llmos.api.openai_schemas import ChatMessageIn

    m = ChatMessageIn(role="user", content=[{"type": "text", "text": "one"}, {"type": "text", "text": "two"}])
    assert m.text() == "one\ntwo"
    r = fake_client.post("/v1/chat/completions", json={**CHAT, "messages": [m.model_dump(exclude_none=True)]})
    assert r.status_code == 200, r.text


def test_tool_turns_are_accepted_back(fake_client: TestClient) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 21}'}]
    r = fake_client.post("/v1/chat/completions", json={**CHAT, "messages": messages, "tools": [WEATHER]})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("body,needle", [
    ({**CHAT, "tool_choice": "required"}, "tool_choice needs tools"),
    ({**CHAT, "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "not among"),
    ({**CHAT, "top_logprobs": 2}, "needs logprobs"),
    ({**CHAT, "messages": [{"role": "tool", "content": "21"}]}, "tool_call_id"),
    ({**CHAT, "response_format": {"type": "json_schema"}}, "json_schema is required"),
])
def test_inconsistent_requests_are_refused(fake_client: TestClient, body: dict, needle: str) -> None:
    r = fake_client.post("/v1/chat/completions", json=body)
    assert r.status_code == 422 and needle in r.json()["error"]["message"], r.text


def test_a_forced_call_and_a_json_format_cannot_both_hold(fake_client: TestClient) -> None:
    body = {**CHAT, "tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}}
    r = fake_client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice"


def test_the_constraint_is_checked_with_the_engine_once(fake_client: TestClient) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}}
    for _ in range(3):
        assert fake_client.post("/v1/chat/completions", json={**CHAT, "response_format": fmt}).status_code == 200
    engine = next(iter(fake_client.kernel.engines.values()))  # type: ignore[attr-defined]
    assert [c for c in engine.calls if c[0] == "check_constraint"] == [("check_constraint", ['{"type":"object"}'])]


def test_n_choices_are_separate_sequences(fake_client: TestClient) -> None:
    body = fake_client.post("/v1/chat/completions", json={**CHAT, "n": 3}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"]["completion_tokens"] == 9
    r = fake_client.post("/v1/completions", json={**COMPLETION, "n": 2, "stream": True,
                                                  "stream_options": {"include_usage": True}})
    events = _events(r.text)
    text = {0: "", 1: ""}
    for e in events:
        for c in e["choices"]:
            text[c["index"]] += c["text"]
    assert text == {0: "t1 t2 t3 ", 1: "t1 t2 t3 "}
    finishes = [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]]
    assert finishes == ["length", "length"] and events[-1]["usage"]["completion_tokens"] == 6


def test_one_model_by_id(fake_client: TestClient) -> None:
    assert fake_client.get(f"/v1/models/{SMOL}").json()["id"] == SMOL
    r = fake_client.get("/v1/models/no-such-model")
    assert r.status_code == 404 and r.json()["error"]["param"] is None
