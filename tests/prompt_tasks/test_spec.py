"""Specs, answer parsing and span offsets: the parts of prompt tasks that need no model."""

from __future__ import annotations

import pytest

from llmos.engines.base import Span
from llmos.errors import InvalidInput, WrongTask
from llmos.prompt_tasks import build_spec, method_for
from llmos.prompt_tasks.classify import likelihood_probs, similarity_probs
from llmos.prompt_tasks.evaluate import iob_tags
from llmos.prompt_tasks.extract import answer_of, parse_mentions, to_spans


def test_methods_follow_what_the_base_can_do() -> None:
    assert method_for("classify", ["generate"]) == "likelihood"
    assert method_for("classify", ["embed"]) == "similarity"
    assert method_for("extract", ["generate"]) == "generate"
    with pytest.raises(WrongTask, match="generator"):
        method_for("extract", ["embed"])
    with pytest.raises(WrongTask):
        method_for("classify", ["classify"])


@pytest.mark.parametrize("labels, template, message", [
    ([], None, "at least 2"),
    (["spam"], None, "at least 2"),
    (["a", "b", "a"], None, "duplicate labels: a"),
    (["a", " "], None, "empty label"),
    (["a", "b"], "Classify this.", "{text}"),
])
def test_bad_specs_are_refused(labels: list[str], template: str | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        build_spec("classify", "likelihood", labels, template=template)


def test_examples_and_descriptions_must_use_known_labels() -> None:
    with pytest.raises(InvalidInput, match="not one of"):
        build_spec("classify", "similarity", ["ham", "spam"], examples=[{"text": "hi", "label": "eggs"}])
    with pytest.raises(InvalidInput, match="unknown labels: eggs"):
        build_spec("classify", "similarity", ["ham", "spam"], descriptions={"eggs": "x"})
    with pytest.raises(InvalidInput, match="does not occur"):
        build_spec("extract", "generate", ["PER"], examples=[{"text": "Ann left", "entities": [
            {"text": "Bob", "label": "PER"}]}])


def test_rendering_fills_text_and_labels() -> None:
    spec = build_spec("classify", "likelihood", ["negative", "positive"], template="{text} -> {labels}",
                      descriptions={"positive": "good"})
    assert spec.render("fine film") == "fine film -> negative or positive (good)"


def test_likelihood_probabilities_are_length_fair_and_calibrated() -> None:
    # label "b" has three tokens with the same mean as "a"'s one: a tie, not a loss for being long
    probs = likelihood_probs(["a", "b"], [[[-1.0], [-1.0, -1.0, -1.0]]])
    assert probs[0]["a"] == pytest.approx(0.5)
    # a prior that favours "a" whatever the input takes its head start away
    probs = likelihood_probs(["a", "b"], [[[-1.0], [-1.5]]], prior=[[-0.5], [-2.0]])
    assert probs[0]["b"] > probs[0]["a"]
    assert sum(probs[0].values()) == pytest.approx(1.0)


def test_similarity_softmax_over_label_centroids() -> None:
    spec = build_spec("classify", "similarity", ["x", "y"])
    probs = similarity_probs(spec, [[1.0, 0.0], [0.6, 0.8]], [[1.0, 0.0], [0.0, 1.0]], [0, 1])
    assert probs[0]["x"] > 0.99 and probs[1]["y"] > probs[1]["x"]


def test_mentions_become_spans_only_where_they_occur() -> None:
    text = "Paul Johnson met paul johnson and Martin McCague in Leicester ."
    output = "PER: Paul Johnson\n- per: Martin McCague\nLOC: London\nORG: \nFOO: Leicester\nnonsense line\nLOC: NONE"
    mentions = parse_mentions(output, ["PER", "LOC"])
    assert mentions == [("PER", "Paul Johnson"), ("PER", "Martin McCague"), ("LOC", "London")]
    spans = to_spans(text, mentions)
    assert [(s.text, s.label, s.score) for s in spans] == [
        ("Paul Johnson", "PER", 1.0), ("Martin McCague", "PER", 1.0)]
    for s in spans:
        assert text[s.start:s.end] == s.text
    caseless = to_spans(text, [("PER", "martin mccague")])
    assert caseless[0].text == "Martin McCague" and caseless[0].score < 1.0
    assert to_spans("Anne Annex", [("PER", "Ann")]) == []  # word boundaries: no partial words


def test_overlapping_mentions_keep_the_first() -> None:
    spans = to_spans("New York City", [("LOC", "New York City"), ("LOC", "York")])
    assert [s.text for s in spans] == ["New York City"]


def test_answer_of_examples() -> None:
    spec = build_spec("extract", "generate", ["PER"], examples=[{"text": "Ann left", "entities": [
        {"text": "Ann", "label": "PER"}]}, {"text": "It rains"}])
    assert [answer_of(e) for e in spec.examples] == ["PER: Ann", "NONE"]


def test_spans_to_iob_tags() -> None:
    tokens = ["Paul", "Johnson", "met", "Kent", "in", "New", "York"]
    text = " ".join(tokens)
    spans = [Span(0, 12, "PER", "Paul Johnson", 1.0), Span(17, 21, "ORG", "Kent", 1.0),
             Span(25, 33, "LOC", "New York", 1.0)]
    assert text[25:33] == "New York"
    assert iob_tags(tokens, spans) == ["B-PER", "I-PER", "O", "B-ORG", "O", "B-LOC", "I-LOC"]
