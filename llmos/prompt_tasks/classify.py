"""Classification without training: label likelihoods under a generator, or embedding similarity.

Both halves are pure functions of token ids or vectors, so the kernel's front door tokenises and the
engine only runs forward passes (``Engine.score`` / ``Engine.embed``) on its worker thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from llmos.engines.base import ChatMessage
from llmos.prompt_tasks.spec import PromptTaskSpec

Encode = Callable[[str], list[int]]
EncodeChat = Callable[[list[ChatMessage]], list[int]]


class LikelihoodPrompts:
    """Token ids to score: a context per input and an answer per label (every label after every input).

    With a chat template (an instruct model) the rendered template is the user's turn and the label
    the assistant's whole answer, end-of-turn included, so a label cannot win by being the prefix of
    a longer word. Without one, the label follows the prompt after a space. Few-shot examples come
    first, as earlier turns (or earlier blocks of plain text).
    """

    def __init__(self, spec: PromptTaskSpec, encode: Encode, encode_chat: EncodeChat | None,
                 end_of_turn: str | None) -> None:
        self.spec = spec
        self._encode = encode
        self._encode_chat = encode_chat
        self._end = end_of_turn or ""
        self._answers = [self._encode(self._answer(label)) for label in spec.labels]

    def _answer(self, label: str) -> str:
        return f"{label}{self._end}" if self._encode_chat else f" {label}"

    def context(self, text: str) -> list[int]:
        if self._encode_chat is None:
            shots = "".join(f"{self.spec.render(e.text)} {e.label}\n\n" for e in self.spec.examples)
            return self._encode(shots + self.spec.render(text))
        messages: list[ChatMessage] = []
        for e in self.spec.examples:
            messages += [ChatMessage("user", self.spec.render(e.text)), ChatMessage("assistant", str(e.label))]
        return self._encode_chat([*messages, ChatMessage("user", self.spec.render(text))])

    @property
    def answers(self) -> list[list[int]]:
        """The ids of each label's answer, in label order."""
        return self._answers

    def contexts(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.context(t) for t in texts]


CONTENT_FREE = "N/A"  # the calibration input: a text that says nothing


def likelihood_probs(labels: list[str], logprobs: list[list[list[float]]],
                     prior: list[list[float]] | None = None) -> list[dict[str, float]]:
    """Per text, a softmax over each label's mean token log-probability (``logprobs[text][label]``).

    The mean (not the sum) keeps a label of many tokens from losing merely for being long. With a
    ``prior`` (each label's token log-probabilities after ``CONTENT_FREE``) its mean is subtracted, so
    a label the model favours whatever the input loses that head start.
    """
    offsets = [sum(lp) / len(lp) for lp in prior] if prior is not None else [0.0] * len(labels)
    return [dict(zip(labels, _softmax([sum(lp) / len(lp) - o for lp, o in zip(row, offsets)]))) for row in logprobs]


def label_documents(spec: PromptTaskSpec) -> tuple[list[str], list[int]]:
    """Texts that stand for the labels (description or name, plus examples) and the label of each."""
    docs, owners = [], []
    for j, label in enumerate(spec.labels):
        docs.append(spec.descriptions.get(label) or label.replace("_", " "))
        owners.append(j)
        for e in spec.examples:
            if e.label == label:
                docs.append(spec.render(e.text))
                owners.append(j)
    return docs, owners


def similarity_probs(spec: PromptTaskSpec, inputs: list[list[float]], docs: list[list[float]],
                     owners: list[int]) -> list[dict[str, float]]:
    """Softmax over cosine similarities to each label's centroid (vectors arrive L2-normalised)."""
    centroids = [_normalise(_mean([v for v, o in zip(docs, owners) if o == j])) for j in range(len(spec.labels))]
    out = []
    for vector in inputs:
        cosines = [sum(a * b for a, b in zip(vector, c)) for c in centroids]
        out.append(dict(zip(spec.labels, _softmax([c / spec.temperature for c in cosines]))))
    return out


def _softmax(xs: list[float]) -> list[float]:
    top = max(xs)
    exps = [math.exp(x - top) for x in xs]
    total = sum(exps)
    return [e / total for e in exps]


def _mean(vectors: list[list[float]]) -> list[float]:
    return [sum(col) / len(vectors) for col in zip(*vectors)]


def _normalise(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]
