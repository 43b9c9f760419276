"""What a prompt-defined task is: a template, a label set (or entity types) and optional examples.

A spec is validated once, when the task is created, so serving never meets a malformed one. It is
stored inside the task's manifest (``lineage.prompt_task``), so the task's digest changes with any
of its parts and every version can be read back exactly.

Methods:

* ``likelihood`` (classify over a generator): each label is scored by the mean log-probability of
  its tokens after the rendered prompt, less its score after a content-free input (contextual
  calibration, Zhao et al. 2021: it removes the model's prior for a label); a softmax over the labels
  gives the probabilities.
* ``similarity`` (classify over an encoder): cosine similarity between the input's embedding and
  each label's (its description, or its name, averaged with its examples), softmax with a temperature.
* ``generate`` (extract over a generator): the model writes ``TYPE: mention`` lines, which are kept
  only where the mention occurs in the input, as spans with character offsets.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmos.errors import InvalidInput

TEXT = "{text}"
LABELS = "{labels}"
Kind = Literal["classify", "extract"]
Method = Literal["likelihood", "similarity", "generate"]

DEFAULT_TEMPLATES: dict[str, str] = {
    "likelihood": "Is the following text {labels}?\n\n{text}",
    "similarity": "{text}",
    "generate": ("Extract the named entities of these types from the text: {labels}.\n"
                 "Answer with one entity per line, written as TYPE: exact words from the text. "
                 "Answer NONE if there are none.\n\nText: {text}"),
}


class Mention(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    label: str = Field(min_length=1)


class Example(BaseModel):
    """A few-shot example: a label for classification, or the mentions to extract."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    label: str | None = None
    entities: list[Mention] | None = None


class PromptTaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Kind = "classify"
    method: Method
    template: str
    labels: list[str]
    descriptions: dict[str, str] = Field(default_factory=dict)
    examples: list[Example] = Field(default_factory=list)
    temperature: float = Field(0.05, gt=0, description="similarity: softmax temperature over cosines")
    calibrate: bool = Field(True, description="likelihood: subtract each label's score on a content-free input")
    max_new_tokens: int = Field(96, ge=1, le=1024, description="generate: tokens the model may write")

    def describe_labels(self) -> str:
        """The ``{labels}`` text: names, each with its description where one was given."""
        names = [f"{x} ({self.descriptions[x]})" if x in self.descriptions else x for x in self.labels]
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"

    def render(self, text: str) -> str:
        return self.template.replace(LABELS, self.describe_labels()).replace(TEXT, text)


def method_for(kind: str, base_tasks: list[str]) -> Method:
    """The method a base can run a task kind with; WrongTask-style InvalidInput when it cannot."""
    from llmos.errors import WrongTask

    if kind == "extract":
        if "generate" in base_tasks:
            return "generate"
        raise WrongTask("extraction needs a generator base (a model that can generate); this base serves "
                        f"{', '.join(base_tasks)}", param="base")
    if "generate" in base_tasks:
        return "likelihood"
    if "embed" in base_tasks:
        return "similarity"
    raise WrongTask(f"a prompt classifier needs a generator or an encoder base; this base serves "
                    f"{', '.join(base_tasks)}", param="base")


def build_spec(kind: str, method: Method, labels: list[str], *, template: str | None = None,
               descriptions: dict[str, str] | None = None, examples: list[dict] | None = None,
               **options: object) -> PromptTaskSpec:
    """A checked spec; InvalidInput (400) naming what is wrong."""
    if kind not in ("classify", "extract"):
        raise InvalidInput(f"unknown prompt task kind {kind!r}; use classify or extract", param="kind")
    labels = [x.strip() for x in labels]
    _check_labels(labels, 2 if kind == "classify" else 1)
    template = template if template is not None else DEFAULT_TEMPLATES[method]
    if TEXT not in template:
        raise InvalidInput(f"the template must contain the {TEXT} placeholder where the input goes",
                           param="template")
    descriptions = {k.strip(): v.strip() for k, v in (descriptions or {}).items()}
    strangers = sorted(set(descriptions) - set(labels))
    if strangers:
        raise InvalidInput(f"descriptions given for unknown labels: {', '.join(strangers)}", param="descriptions")
    try:
        spec = PromptTaskSpec(kind=kind, method=method, template=template, labels=labels,  # type: ignore[arg-type]
                              descriptions=descriptions, examples=examples or [], **options)  # type: ignore[arg-type]
    except ValueError as exc:
        raise InvalidInput(f"invalid prompt task: {exc}") from None
    for i, example in enumerate(spec.examples, 1):
        _check_example(spec, example, i)
    return spec


def _check_labels(labels: list[str], least: int) -> None:
    if not all(labels):
        raise InvalidInput("the label set has an empty label", param="labels")
    if len(labels) < least:
        raise InvalidInput(f"the label set has {len(labels)} label(s); give at least {least}", param="labels")
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise InvalidInput(f"duplicate labels: {', '.join(dupes)}", param="labels")


def _check_example(spec: PromptTaskSpec, example: Example, number: int) -> None:
    where = f"example {number}"
    if spec.kind == "classify":
        if example.label not in spec.labels:
            raise InvalidInput(f"{where}: label {example.label!r} is not one of {', '.join(spec.labels)}",
                               param="examples")
        return
    for mention in example.entities or []:
        if mention.label not in spec.labels:
            raise InvalidInput(f"{where}: entity type {mention.label!r} is not one of {', '.join(spec.labels)}",
                               param="examples")
        if mention.text not in example.text:
            raise InvalidInput(f"{where}: mention {mention.text!r} does not occur in its text", param="examples")
