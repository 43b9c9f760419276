"""What ``POST /v1/ask`` and ``llmos ask`` answer: a plan (steps), a question, a refusal, or what ran."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmos.ask.ops import StepCall

MAX_REQUEST_CHARS = 1000

Status = Literal["planned", "question", "refused", "done", "failed"]


class AskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_REQUEST_CHARS, description="what to do, in plain language")
    confirm: bool = Field(False, description="run the plan at once instead of returning it for confirmation")
    local_files: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(default_factory=list, max_length=16,
                                   description="paths written in text that exist on the asking client's machine "
                                               "(llmos ask sends them; only that client can upload them)")


class PlanStep(BaseModel):
    operation: str
    summary: str  # the operation with its arguments, in words
    arguments: dict[str, Any]
    call: StepCall
    changes: bool  # False: it only reads


class StepResult(BaseModel):
    step: int  # index into the plan's steps
    operation: str
    status: int  # the route's HTTP status
    ok: bool
    result: Any = None  # the route's JSON body (its error object when it failed)


class AskOut(BaseModel):
    object: Literal["ask"] = "ask"
    id: str | None = None  # the plan's id (for POST /v1/ask/{id}/run); None when there is nothing to run
    status: Status
    text: str
    message: str  # what happened or what is wanted, in words
    steps: list[PlanStep] = Field(default_factory=list)
    question: str | None = None
    options: list[str] = Field(default_factory=list)  # what the question offers, when it offers names
    results: list[StepResult] = Field(default_factory=list)
