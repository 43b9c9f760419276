"""The operations ``llmos ask`` can plan: each one is a call of one of the daemon's own routes.

An ``Operation`` says what it does (its summary and example phrasings are what the embedding model
compares a request with), which words point at it, and its parameters; ``Operation.call`` turns filled
arguments into the route's method, path and JSON body. A parameter's ``kind`` says where its values come
from: the names of the caller's own models, datasets, jobs or knowledge bases, or the request's words.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ParamKind(str, Enum):
    MODEL = "model"
    DATASET = "dataset"
    JOB = "job"
    KB = "kb"
    TEXT = "text"  # free words taken from the request (a search query)
    INTEGER = "integer"
    SHARE = "share"  # a fraction in (0, 1); "10%" reads as 0.1
    CHOICE = "choice"  # one of ``choices``


ENTITY_KINDS = (ParamKind.MODEL, ParamKind.DATASET, ParamKind.JOB, ParamKind.KB)


class Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: ParamKind
    description: str
    required: bool = True
    where: Literal["path", "body"] = "body"
    body_key: str | None = None  # the route's field (default: ``name``)
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None

    def schema(self) -> dict[str, Any]:
        """The JSON schema of one value (before narrowing to the names that exist)."""
        if self.kind == ParamKind.INTEGER:
            out: dict[str, Any] = {"type": "integer"}
            if self.minimum is not None:
                out["minimum"] = self.minimum
            if self.maximum is not None:
                out["maximum"] = self.maximum
            return out
        if self.kind == ParamKind.SHARE:
            return {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
        if self.kind == ParamKind.CHOICE:
            return {"enum": list(self.choices)}
        return {"type": "string", "minLength": 1, "maxLength": 200}


class StepCall(BaseModel):
    """One route call: what a plan step runs."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: str
    body: dict[str, Any] | None = None


class Operation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    summary: str  # what it does, in the words a reply shows
    examples: tuple[str, ...]  # plain-language requests that mean it
    cues: tuple[str, ...] = ()  # words (regexes on word boundaries) that point at it over its neighbours
    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: str  # a template: "/v1/jobs/{job}/pause"
    params: tuple[Param, ...] = ()
    fixed: dict[str, Any] = Field(default_factory=dict)  # body fields every call carries
    changes: bool = True  # False: it only reads

    def describe(self, args: dict[str, Any]) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in args.items())
        return f"{self.summary} ({shown})" if shown else self.summary

    def call(self, args: dict[str, Any]) -> StepCall:
        path, body = self.path, dict(self.fixed)
        for p in self.params:
            if p.name not in args:
                continue
            if p.where == "path":
                path = path.replace("{" + p.name + "}", str(args[p.name]))
            else:
                body[p.body_key or p.name] = args[p.name]
        has_body = self.method != "GET" and (body or self.method in ("POST", "PUT"))
        return StepCall(method=self.method, path=path, body=body if has_body else None)


def _model(desc: str = "the model", where: Literal["path", "body"] = "body") -> Param:
    return Param(name="model", kind=ParamKind.MODEL, description=desc, where=where)


_JOB = Param(name="job", kind=ParamKind.JOB, description="the job's id", where="path")
_KB = Param(name="kb", kind=ParamKind.KB, description="the knowledge base", where="path")
_DATASET = Param(name="dataset", kind=ParamKind.DATASET, description="the dataset to train on")
_METHOD = Param(name="method", kind=ParamKind.CHOICE, description="fine-tuning method", required=False,
                choices=("full", "lora", "prefix", "prompt"))

OPERATIONS: tuple[Operation, ...] = (
    Operation(name="list_models", summary="list the models", method="GET", path="/v1/models", changes=False,
              cues=(r"models", r"what models"),
              examples=("list my models", "which models do I have", "show all the models in the store",
                        "what models are available")),
    Operation(name="ps", summary="show loaded models and memory", method="GET", path="/admin/ps", changes=False,
              cues=(r"loaded", r"memory", r"ps", r"running models", r"in memory"),
              examples=("what is loaded right now", "show memory use", "which models are in memory",
                        "ps", "how much memory is used")),
    Operation(name="load_model", summary="load a model into memory", method="POST", path="/admin/load",
              params=(_model("the model to load"),), cues=(r"load", r"warm up", r"preload", r"bring up"),
              examples=("load the model", "load smollm2 into memory", "warm up the chat model",
                        "preload the embedding model")),
    Operation(name="unload_model", summary="unload a model from memory", method="POST", path="/admin/unload",
              params=(_model("the model to unload"),),
              cues=(r"unload", r"evict", r"free", r"drop .* from memory", r"release"),
              examples=("unload the model", "free the memory of smollm2", "evict minilm from memory",
                        "take the model out of memory")),
    Operation(name="list_jobs", summary="list the background jobs", method="GET", path="/v1/jobs", changes=False,
              cues=(r"jobs",),
              examples=("list my jobs", "show the background jobs", "what jobs are running",
                        "status of my training jobs")),
    Operation(name="pause_job", summary="pause a job", method="POST", path="/v1/jobs/{job}/pause", params=(_JOB,),
              cues=(r"pause", r"hold", r"suspend"),
              examples=("pause job", "put the job on hold", "suspend the training job")),
    Operation(name="resume_job", summary="resume a paused job", method="POST", path="/v1/jobs/{job}/resume",
              params=(_JOB,), cues=(r"resume", r"continue", r"unpause"),
              examples=("resume job", "continue the paused job", "unpause the training")),
    Operation(name="cancel_job", summary="cancel a job", method="POST", path="/v1/jobs/{job}/cancel",
              params=(_JOB,), cues=(r"cancel", r"abort", r"kill", r"stop"),
              examples=("cancel job", "abort the training job", "stop that job for good")),
    Operation(name="list_datasets", summary="list the datasets", method="GET", path="/v1/datasets", changes=False,
              cues=(r"datasets", r"data sets"),
              examples=("list my datasets", "which datasets do I have", "show the training data I imported")),
    Operation(name="train", summary="fine-tune a model on a dataset", method="POST", path="/v1/training/jobs",
              params=(_model("the base model"), _DATASET, _METHOD),
              cues=(r"train", r"fine-?tune", r"retrain"),
              examples=("fine-tune the model on the dataset", "train smollm2 on my intents data",
                        "start a lora fine-tune of the model with this dataset")),
    Operation(name="tune", summary="search hyperparameters for a model on a dataset", method="POST",
              path="/v1/tuning/jobs",
              params=(_model("the base model"), _DATASET,
                      Param(name="trials", kind=ParamKind.INTEGER, description="trials to run", required=False,
                            minimum=1, maximum=200)),
              cues=(r"tune", r"hyperparameters?", r"trials", r"search .*learning rate", r"hpo", r"sweep"),
              examples=("tune the hyperparameters of the model on the dataset",
                        "run a hyperparameter search with 10 trials", "find the best learning rate for the model")),
    Operation(name="list_loops", summary="list the feedback-loop policies", method="GET", path="/v1/loop",
              changes=False, cues=(r"loops?", r"polic(y|ies)", r"self-tuning"),
              examples=("list the loop policies", "which models retrain from feedback",
                        "show the feedback loops")),
    Operation(name="set_loop", summary="turn on the feedback loop for a model", method="PUT",
              path="/v1/loop/{model}",
              params=(_model("the served model", "path"),
                      Param(name="canary_share", kind=ParamKind.SHARE, description="share of traffic in the canary",
                            required=False)),
              cues=(r"canary", r"loop", r"feedback", r"corrections", r"retrain automatically"),
              examples=("retrain the model from feedback and canary it on 10% of traffic",
                        "set up the feedback loop for the model", "learn from corrections automatically")),
    Operation(name="rollback", summary="roll a model back to the version that served before", method="POST",
              path="/v1/loop/{model}/rollback", params=(_model("the model to roll back", "path"),),
              cues=(r"roll ?back", r"revert", r"previous version", r"undo"),
              examples=("roll back the model", "revert to the previous version of the model",
                        "undo the last promotion")),
    Operation(name="list_kbs", summary="list the knowledge bases", method="GET", path="/v1/kb", changes=False,
              cues=(r"knowledge bases?", r"kbs?", r"document collections?"),
              examples=("list my knowledge bases", "which knowledge bases exist", "show the document collections")),
    Operation(name="search_kb", summary="search a knowledge base", method="POST", path="/v1/kb/{kb}/search",
              params=(_KB, Param(name="query", kind=ParamKind.TEXT, description="what to look for")),
              cues=(r"search", r"look up", r"find", r"what does .* say"),
              examples=("search the knowledge base for refunds", "look up card delivery in the faq",
                        "find passages about exchange rates")),
    Operation(name="create_kb", summary="create a knowledge base", method="POST", path="/v1/kb",
              params=(Param(name="name", kind=ParamKind.TEXT, description="the new knowledge base's name"),),
              cues=(r"create", r"new", r"make"),
              examples=("create a knowledge base called faq", "make a new knowledge base named docs")),
)

BY_NAME: dict[str, Operation] = {op.name: op for op in OPERATIONS}
