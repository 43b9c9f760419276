"""Pure pieces of generation: stop strings, sampling filters, span merging (no model needed)."""

from __future__ import annotations

import pytest
import torch

from llmos.engines.sampling import StopMatcher, check_params, sample_row
from llmos.engines.spans import WordTag, merge_spans, split_tag
from llmos.errors import InvalidInput
from llmos.engines.types import SamplingParams


def feed(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    out, hit = "", False
    for piece in pieces:
        text, hit = matcher.push(piece)
        out += text
        if hit:
            break
    return out, hit


def test_stop_string_split_over_pieces_is_never_emitted():
    out, hit = feed(StopMatcher(["###"]), ["Hello #", "#", "# world"])
    assert (out, hit) == ("Hello ", True)


def test_held_back_text_is_released_when_it_cannot_become_a_stop():
    matcher = StopMatcher(["\n\n"])
    assert matcher.push("a\n") == ("a", False)
    assert matcher.push("b") == ("\nb", False)
    assert matcher.push("\n") == ("", False)
    assert matcher.flush() == "\n"


def test_earliest_stop_wins():
    out, hit = feed(StopMatcher(["world", "lo w"]), ["hello world"])
    assert (out, hit) == ("hel", True)


def test_top_k_one_is_greedy_and_top_p_keeps_the_best():
    logits = torch.tensor([0.0, 3.0, 1.0, 2.9])
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert sample_row(logits, SamplingParams(temperature=1.0, top_k=1), gen) == 1
        assert sample_row(logits, SamplingParams(temperature=1.0, top_p=0.01), gen) == 1
    picks = {sample_row(logits, SamplingParams(temperature=1.0, top_k=2), gen) for _ in range(50)}
    assert picks == {1, 3}


@pytest.mark.parametrize(
    "params", [dict(max_tokens=0), dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1)]
)
def test_bad_sampling_params(params):
    with pytest.raises(InvalidInput):
        check_params(SamplingParams(**params))


def test_split_tag():
    assert split_tag("B-PER") == ("B", "PER")
    assert split_tag("I_LOC") == ("I", "LOC")
    assert split_tag("PER") == ("", "PER")
    assert split_tag("BIO") == ("", "BIO")


def test_merge_iob2_and_plain_labels():
    text = "Angela Merkel met Joe in New York"
    words = [(0, 6, "B-PER"), (7, 13, "I-PER"), (14, 17, "O"), (18, 21, "B-PER"), (22, 24, "O"),
             (25, 28, "B-LOC"), (29, 33, "I-LOC")]
    spans = merge_spans(text, [WordTag(s, e, label, 0.5) for s, e, label in words])
    assert [(s.text, s.label) for s in spans] == [("Angela Merkel", "PER"), ("Joe", "PER"), ("New York", "LOC")]
    plain = [(0, 6, "PER"), (7, 13, "PER"), (14, 17, "O"), (25, 28, "LOC"), (29, 33, "PER")]
    spans = merge_spans(text, [WordTag(s, e, label, 1.0) for s, e, label in plain])
    assert [(s.text, s.label) for s in spans] == [("Angela Merkel", "PER"), ("New", "LOC"), ("York", "PER")]


def test_i_tag_after_another_type_opens_a_new_span():
    text = "Paris Hilton"
    spans = merge_spans(text, [WordTag(0, 5, "B-LOC", 0.9), WordTag(6, 12, "I-PER", 0.8)])
    assert [(s.text, s.label) for s in spans] == [("Paris", "LOC"), ("Hilton", "PER")]
