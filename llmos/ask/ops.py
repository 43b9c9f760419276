"""The operations ``llmos ask`` can plan: each one is a call of one of the daemon's own routes.

An ``Operation`` says what it does (its summary and example phrasings are what the embedding model
compares a request with), which words point at it, and its parameters; ``Operation.call`` turns filled
arguments into the route's method, path and JSON body. A parameter's ``kind`` says where its values come
from: the names of the caller's own models, datasets, jobs or knowledge bases, or the request's words.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import PurePath
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
    SCOPES = "scopes"  # one or more of ``choices``, named in the words; never guessed
    KEY = "key"  # an API key's id (key_...), as written in the request
    FILE = "file"  # an uploaded file's id (file-...) or a path on the asking client's machine


ENTITY_KINDS = (ParamKind.MODEL, ParamKind.DATASET, ParamKind.JOB, ParamKind.KB, ParamKind.KEY, ParamKind.FILE)
FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")


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
    from_file: bool = False  # when the words do not give it: the file argument's name without its suffix

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
        if self.kind == ParamKind.SCOPES:
            return {"type": "array", "items": {"enum": list(self.choices)}, "minItems": 1, "uniqueItems": True}
        return {"type": "string", "minLength": 1, "maxLength": 200}


class Upload(BaseModel):
    """The file a multipart step sends: an uploaded file of the caller's (``file_id``, read through
    ``GET /v1/files/{id}/content`` with the caller's key) or a ``path`` on the asking client's machine,
    which only that client can send (``llmos ask`` does)."""

    model_config = ConfigDict(extra="forbid")

    field: str  # the route's form field
    file_id: str | None = None
    path: str | None = None

    @classmethod
    def of(cls, field: str, value: str) -> Upload:
        return cls(field=field, file_id=value) if FILE_ID.match(value) else cls(field=field, path=value)


class StepCall(BaseModel):
    """One route call: what a plan step runs (a JSON body, or form fields and one file)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["GET", "POST", "PUT", "DELETE"]
    path: str
    body: dict[str, Any] | None = None
    form: dict[str, str] | None = None
    upload: Upload | None = None


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
    upload_field: str | None = None  # a multipart route: its FILE parameter goes in this form field

    def describe(self, args: dict[str, Any]) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in args.items())
        return f"{self.summary} ({shown})" if shown else self.summary

    def with_defaults(self, args: dict[str, Any]) -> dict[str, Any]:
        """``args`` plus the values that default to the file's name."""
        out = dict(args)
        for p in self.params:
            if p.from_file and p.name not in out and "file" in out:
                out[p.name] = file_stem(str(out["file"]))
        return out

    def call(self, args: dict[str, Any]) -> StepCall:
        if self.upload_field is not None:
            return self._multipart(args)
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

    def _multipart(self, args: dict[str, Any]) -> StepCall:
        path, form, upload = self.path, {k: str(v) for k, v in self.fixed.items()}, None
        for p in self.params:
            value = args.get(p.name)
            if value is None:
                continue
            if p.kind == ParamKind.FILE:
                upload = Upload.of(self.upload_field or "file", str(value))
            elif p.where == "path":
                path = path.replace("{" + p.name + "}", str(value))
            else:
                form[p.body_key or p.name] = str(value)
        return StepCall(method=self.method, path=path, form=form or None, upload=upload)


def file_stem(value: str) -> str:
    """A dataset name from a file's name: "data/sst2_train.tsv" -> "sst2_train" (a file id stays itself)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", PurePath(value).stem).strip("-._")
    return (stem or "data")[:64]


def _model(desc: str = "the model", where: Literal["path", "body"] = "body") -> Param:
    return Param(name="model", kind=ParamKind.MODEL, description=desc, where=where)


_JOB = Param(name="job", kind=ParamKind.JOB, description="the job's id", where="path")
_KB = Param(name="kb", kind=ParamKind.KB, description="the knowledge base", where="path")
_DATASET = Param(name="dataset", kind=ParamKind.DATASET, description="the dataset to train on")
_FILE = Param(name="file", kind=ParamKind.FILE, description="the file (a path or an uploaded file's id)")
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
    Operation(name="add_documents", summary="add a document to a knowledge base", method="POST",
              path="/v1/kb/{kb}/documents", params=(_KB, _FILE), upload_field="files",
              cues=(r"add", r"index", r"ingest", r"put", r"documents?"),
              examples=("add the file to the knowledge base", "index this document in the faq",
                        "put the file into the knowledge base", "ingest the notes into the docs kb")),
    Operation(name="import_dataset", summary="import a dataset from a file", method="POST", path="/v1/datasets",
              params=(_FILE, Param(name="name", kind=ParamKind.TEXT, description="the dataset's name",
                                   from_file=True, required=False)),
              upload_field="file", cues=(r"import", r"upload", r"datasets?", r"training data"),
              examples=("import the file as a dataset", "upload the file as training data called reviews",
                        "make a dataset from the file", "load the csv file into a new dataset")),
    Operation(name="create_key", summary="create an API key", method="POST", path="/admin/keys",
              params=(Param(name="scopes", kind=ParamKind.SCOPES, description="what the key may do",
                            choices=("read", "infer", "train", "admin")),
                      Param(name="tenant", kind=ParamKind.TEXT, description="the tenant it acts for", required=False),
                      Param(name="name", kind=ParamKind.TEXT, description="a label for the key", required=False)),
              cues=(r"(api )?keys?", r"create", r"new", r"issue", r"generate", r"token"),
              examples=("create an api key with the read scope", "make a new key for tenant acme that can infer",
                        "issue an inference token for the team", "generate a train key called ci")),
    Operation(name="list_keys", summary="list the API keys", method="GET", path="/admin/keys", changes=False,
              cues=(r"(api )?keys", r"tokens"),
              examples=("list the api keys", "which keys exist", "show all the access tokens")),
    Operation(name="revoke_key", summary="revoke an API key", method="DELETE", path="/admin/keys/{key}",
              params=(Param(name="key", kind=ParamKind.KEY, description="the key's id", where="path"),),
              cues=(r"revoke", r"disable", r"invalidate", r"deactivate"),
              examples=("revoke the key", "disable api key key_1234", "invalidate that access token")),
)

BY_NAME: dict[str, Operation] = {op.name: op for op in OPERATIONS}
