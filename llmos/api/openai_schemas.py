"""Wire types of OpenAI's routes: chat completions, completions, embeddings.

Every field OpenAI defines is either honoured or refused: a field llmos does not know, or a known one set
to anything but its no-op value (``frequency_penalty: 0`` is a no-op; ``0.5`` is not), fails validation
with the error type ``unsupported_parameter``, which the API answers with a 400 naming the field. A
content part llmos cannot read (an image, audio, a file) fails as ``unsupported_content``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from llmos.api.bounds import INT64_MAX, ModelName, Seed
from llmos.api.schemas import DEFAULT_TEMPERATURE, TextsIn

MAX_N = 16  # choices per request; n x max_tokens is bounded by LLMOS_MAX_TOKENS as well
MAX_TOOLS = 128
FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class _Strict(BaseModel):
    """A wire object whose unknown fields are refused (400 naming them), never silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def unsupported(field: str, why: str = "llmos does not support it") -> PydanticCustomError:
    return PydanticCustomError("unsupported_parameter", "{field} is not supported: {why}",
                               {"field": field, "why": why})


# -- messages ------------------------------------------------------------------------------------
class FunctionCallIn(_Strict):
    name: FunctionName
    arguments: str = Field(max_length=100_000, description="JSON text of the arguments object")


class ToolCallIn(_Strict):
    id: str = Field(min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(_Strict):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(default=None, max_length=256, description="accepted; not shown to the model")
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = Field(default=None, max_length=128)
    refusal: str | None = Field(default=None, description="accepted on assistant turns sent back; not shown")

    @field_validator("content")
    @classmethod
    def _readable_parts(cls, v: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        for part in v if isinstance(v, list) else []:
            kind = part.get("type")
            if kind != "text":
                raise PydanticCustomError("unsupported_content",
                                          "content part type '{kind}' is not supported: llmos models read text only",
                                          {"kind": kind})
            if not isinstance(part.get("text"), str):
                raise ValueError("a text content part needs a string 'text'")
        return v

    @model_validator(mode="after")
    def _turn_shape(self) -> ChatMessageIn:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.content is None and not self.tool_calls:
            raise ValueError("content is required (it may be null only on an assistant message with tool_calls)")
        return self

    def text(self) -> str:
        """The text parts joined by newlines (a plain string as it is)."""
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "\n".join(str(p["text"]) for p in self.content)


# -- tools and output formats ----------------------------------------------------------------------
class FunctionDefIn(_Strict):
    name: FunctionName
    description: str = Field(default="", max_length=10_000)
    parameters: dict[str, Any] | None = Field(default=None, description="a JSON schema of the arguments object")
    strict: bool | None = Field(default=None, description="accepted; forced calls are always schema-valid")


class ToolIn(_Strict):
    type: Literal["function"]
    function: FunctionDefIn


class NamedFunction(_Strict):
    name: FunctionName


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Strict):
    name: FunctionName
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = Field(default=None, description="accepted; the schema is always enforced")


class ResponseFormatIn(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormatIn:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type 'json_schema' and allowed only with it")
        return self


class StreamOptions(_Strict):
    include_usage: bool = False


# -- requests --------------------------------------------------------------------------------------
def choice_seed(seed: int | None, i: int) -> int | None:
    """Choice ``i``'s seed: ``seed + i``, wrapped into the signed 64 bits a seed may hold."""
    return None if seed is None else (seed + i + INT64_MAX + 1) % 2**64 - INT64_MAX - 1


class SamplingIn(_Strict):
    model: ModelName
    max_tokens: int | None = Field(default=None, ge=1, le=2**31 - 1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=2**31 - 1)
    temperature: float = Field(default=DEFAULT_TEMPERATURE, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, le=2**31 - 1, description="llmos extension: keep the k likeliest tokens (0: all)")
    stop: str | list[str] | None = None
    seed: Seed | None = Field(default=None, description="choice i samples with seed + i (64-bit, wrapping)")
    n: int = Field(default=1, ge=1, le=MAX_N, description="choices, each its own sequence in the batch")
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256, description="end-user id: the fair-share key")
    priority: int = Field(default=0, ge=-100, le=100, description="llmos extension: higher runs first")
    frequency_penalty: float | None = Field(default=None, description="only 0 (no penalty)")
    presence_penalty: float | None = Field(default=None, description="only 0 (no penalty)")
    logit_bias: dict[str, float] | None = Field(default=None, description="only empty")

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4 or any(not s or len(s) > 256 for s in stops):
            raise ValueError("up to 4 non-empty stop strings of up to 256 characters")
        return v

    @field_validator("frequency_penalty", "presence_penalty", "logit_bias")
    @classmethod
    def _no_op_only(cls, v: object, info: ValidationInfo) -> object:
        if v:  # 0, 0.0, {} and null change nothing
            raise unsupported(str(info.field_name), "llmos samples without penalties or biases; leave it unset or 0")
        return v

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> SamplingIn:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def logprobs_count(self) -> int | None:
        """How many alternatives per token the engine reports (None: no log-probabilities)."""
        return None


class ChatCompletionIn(SamplingIn):
    messages: list[ChatMessageIn] = Field(min_length=1)
    tools: list[ToolIn] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = Field(default=None, description="false: at most one call is returned")
    response_format: ResponseFormatIn | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    knowledge: str | None = Field(default=None, min_length=1, max_length=128,
                                  description="llmos extension: a knowledge base to ground the answer in; the "
                                              "response carries the passages it was given as `citations`")

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionIn:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.tool_choice is not None and not self.tools:
            raise ValueError("tool_choice needs tools")
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError("tool function names must be unique")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise ValueError(f"tool_choice names {self.tool_choice.function.name!r}, which is not among the tools")
        return self

    def logprobs_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionIn(SamplingIn):
    prompt: str | list[str]
    logprobs: int | None = Field(default=None, ge=0, le=5, description="alternatives per token (OpenAI's limit: 5)")
    echo: bool | None = Field(default=None, description="only false")
    best_of: int | None = Field(default=None, description="only 1")
    suffix: str | None = Field(default=None, description="only unset")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("exactly one prompt per request")
        if not (v if isinstance(v, str) else v[0]):
            raise ValueError("the prompt is empty")
        return v

    @field_validator("echo", "suffix")
    @classmethod
    def _unset_or_false(cls, v: object, info: ValidationInfo) -> object:
        if v:
            raise unsupported(str(info.field_name))
        return v

    @field_validator("best_of")
    @classmethod
    def _one(cls, v: int | None) -> int | None:
        if v not in (None, 1):
            raise unsupported("best_of", "ask for n choices instead")
        return v

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def logprobs_count(self) -> int | None:
        return self.logprobs


class EmbeddingsIn(TextsIn):
    model_config = ConfigDict(extra="forbid")

    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = Field(default=None, max_length=256)
    dimensions: int | None = Field(default=None, description="never: embeddings keep the model's size")

    @field_validator("dimensions")
    @classmethod
    def _no_dimensions(cls, v: int | None) -> int | None:
        if v is not None:
            raise unsupported("dimensions", "embeddings have the model's own size")
        return v
