"""Wire types of the HTTP API shared by its routes (OpenAI's own request shapes: ``openai_schemas``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmos.api.bounds import ModelName

DEFAULT_TEMPERATURE = 0.7  # OpenAI's 1.0 is too hot for small models; Ollama uses 0.8


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextsIn(_Request):
    model: ModelName
    input: str | list[str]

    @field_validator("input")
    @classmethod
    def _non_empty(cls, v: str | list[str]) -> str | list[str]:
        items = [v] if isinstance(v, str) else v
        if not items or len(items) > 256:
            raise ValueError("between 1 and 256 texts")
        if any(not isinstance(t, str) or not t.strip() for t in items):
            raise ValueError("texts must be non-empty strings")
        return v

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class LoadIn(_Request):
    model: ModelName
    keep_alive: float | None = Field(default=None, ge=0, le=365 * 86400, description="seconds idle before unloading")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int
