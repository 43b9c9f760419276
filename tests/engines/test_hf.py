"""HFEngine generation on the real SmolLM2: iteration-level batching must not change any sequence."""

from __future__ import annotations

import pytest
import torch

from llmos.engines.base import ChatMessage
from llmos.engines.hf import HFEngine
from llmos.errors import InvalidInput, Unavailable, WrongTask
from llmos.engines.types import RequestStatus

from .helpers import Result, record, run, run_alone, spec, tokens

PROMPTS = [
    "The capital of Italy is",
    "Once upon a time, a small robot",
    "1, 2, 3, 4,",
    "Fruits, in order: apple, banana, cherry, date, elderberry, fig, grape, honeydew,",
]


@pytest.fixture(scope="module")
def prompts(smol_engine: HFEngine) -> list[list[int]]:
    return [smol_engine.encode(p) for p in PROMPTS]


def test_greedy_matches_transformers_generate(smol_engine, smol_model, prompts):
    # Prefilled together, so the shorter prompts are left-padded inside the batch.
    got = run(smol_engine, [spec(f"g{i}", p, max_tokens=10) for i, p in enumerate(prompts[:3])])
    for i, prompt in enumerate(prompts[:3]):
        with torch.inference_mode():
            out = smol_model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False)
        assert got[f"g{i}"].tokens == out[0, len(prompt) :].tolist()
    assert got["g0"].status == RequestStatus.FINISHED_LENGTH


def test_late_joiner_matches_running_alone(smol_engine, prompts):
    specs = [spec("early0", prompts[0], max_tokens=8), spec("early1", prompts[1], max_tokens=8)]
    late = spec("late", prompts[3], max_tokens=6)  # longer than the running rows: they get left-padded
    alone = tokens(run_alone(smol_engine, [*specs, late]))

    results: dict[str, Result] = {}
    record(results, smol_engine.prefill(specs))
    for _ in range(3):
        record(results, smol_engine.decode(["early0", "early1"]))
    record(results, smol_engine.prefill([late]))  # joins a batch that is mid-decode
    run_rest(smol_engine, results, ["early0", "early1", "late"])
    assert tokens(results) == alone


def test_decoding_a_subset_and_releasing_midway(smol_engine, prompts):
    specs = [spec(f"s{i}", p, max_tokens=6) for i, p in enumerate(prompts[:3])]
    alone = tokens(run_alone(smol_engine, specs))

    results: dict[str, Result] = {}
    record(results, smol_engine.prefill(specs))
    record(results, smol_engine.decode(["s2", "s0"]))  # a subset, out of row order
    record(results, smol_engine.decode(["s1"]))
    smol_engine.release(["s1", "never-existed"])  # tolerant of unknown ids
    run_rest(smol_engine, results, ["s0", "s2"])
    assert results["s0"].tokens == alone["s0"] and results["s2"].tokens == alone["s2"]
    assert results["s1"].tokens == alone["s1"][:2]


def run_rest(engine, results: dict[str, Result], live: list[str]) -> None:
    while live:
        done = record(results, engine.decode(live))
        engine.release(done)
        live = [i for i in live if i not in done]


def test_chat_template_and_eos(smol_engine):
    prompt = smol_engine.encode_chat([ChatMessage("user", "What is the capital of France?")])
    assert smol_engine.encode("<|im_start|>assistant\n") == prompt[-4:]  # <|im_start|> assistant \n
    res = run(smol_engine, [spec("chat", prompt, max_tokens=40)])["chat"]
    assert "Paris" in res.text
    assert res.status == RequestStatus.FINISHED_STOPPED  # ended on <|im_end|>, not the token limit
    assert len(res.tokens) < 40 and "<|im_end|>" not in res.text


def test_max_tokens_and_stop_strings(smol_engine, prompts):
    full = run(smol_engine, [spec("full", prompts[1], max_tokens=16)])["full"]
    assert len(full.tokens) == 16 and full.status == RequestStatus.FINISHED_LENGTH
    words = full.text.split()
    stop = " " + words[len(words) // 2]  # a stop string that starts mid-output
    cut = run(smol_engine, [spec("cut", prompts[1], max_tokens=16, stop=["never there", stop])])["cut"]
    assert cut.status == RequestStatus.FINISHED_STOPPED
    assert cut.text == full.text[: full.text.index(stop)]
    assert stop not in cut.text


def test_stop_string_spanning_tokens_is_held_back(smol_engine, prompts):
    full = run(smol_engine, [spec("full", prompts[2], max_tokens=12)])["full"]
    start = full.text.index("6")
    stop = full.text[start : start + 4]  # e.g. "6, 7": several tokens long
    cut = run(smol_engine, [spec("cut", prompts[2], max_tokens=12, stop=[stop])])["cut"]
    assert cut.text == full.text[:start] and cut.status == RequestStatus.FINISHED_STOPPED


def test_sampling_is_reproducible_per_seed_whatever_the_batch(smol_engine, prompts):
    sampled = dict(temperature=0.9, top_p=0.95, top_k=50, max_tokens=10)
    mine = spec("mine", prompts[1], seed=1234, **sampled)
    alone = run(smol_engine, [mine])["mine"]
    again = run(smol_engine, [spec("again", prompts[1], seed=1234, **sampled)])["again"]
    crowd = [spec("other", prompts[1], seed=99, **sampled), spec("greedy", prompts[0], max_tokens=10)]
    batched = run(smol_engine, [crowd[0], spec("mine2", prompts[1], seed=1234, **sampled), crowd[1]])
    assert again.tokens == alone.tokens and again.text == alone.text
    assert batched["mine2"].tokens == alone.tokens
    assert batched["other"].tokens != alone.tokens  # another seed, another sample


def test_context_limit_ends_with_length(small_context_dir):
    engine = HFEngine(small_context_dir, name="smol32")
    try:
        prompt = engine.encode("1, 2, 3, 4, 5, 6, 7,")  # counting goes on: no early end
        res = run(engine, [spec("c", prompt, max_tokens=100)])["c"]
        assert res.status == RequestStatus.FINISHED_LENGTH
        assert len(prompt) + len(res.tokens) == 32
        with pytest.raises(InvalidInput, match="context"):
            engine.prefill([spec("long", list(range(100, 132)))])
        assert engine.info().context_length == 32
    finally:
        engine.close()


def test_bad_requests_are_refused_and_change_nothing(smol_engine, prompts):
    ok = spec("ok", prompts[0], max_tokens=4)
    record({}, smol_engine.prefill([ok]))
    before = smol_engine.footprint()
    bad = [
        [spec("x", prompts[0], adapter="nope")],
        [spec("x", [])],
        [spec("x", [10**9])],
        [spec("x", prompts[0], max_tokens=0)],
        [spec("x", prompts[0], temperature=1.0, top_p=0.0)],
        [spec("y", prompts[0]), spec("y", prompts[1])],
        [spec("ok", prompts[0])],
    ]
    for specs in bad:
        with pytest.raises(InvalidInput):
            smol_engine.prefill(specs)
    with pytest.raises(InvalidInput, match="loaded adapters: none"):
        smol_engine.prefill([spec("x", prompts[0], adapter="nope")])
    with pytest.raises(Unavailable):
        smol_engine.prefill([spec(f"many{i}", prompts[0]) for i in range(smol_engine.max_batch_size)])
    with pytest.raises(InvalidInput, match="not live"):
        smol_engine.decode(["ok", "ghost"])
    assert smol_engine.footprint() == before
    run_rest(smol_engine, {}, ["ok"])
    with pytest.raises(InvalidInput):
        smol_engine.decode(["ok"])  # released


def test_wrong_task_and_info(smol_engine):
    with pytest.raises(WrongTask):
        smol_engine.classify(["hello"])
    with pytest.raises(WrongTask):
        smol_engine.embed(["hello"])
    info = smol_engine.info()
    assert info.tasks == ["generate"] and info.context_length == 8192 and info.labels == []


def test_footprint_counts_weights_and_cache(smol_engine, prompts):
    idle = smol_engine.footprint()
    params = 134_515_008  # SmolLM2-135M, tied embeddings counted once
    assert params * 4 <= idle < params * 4 * 1.05
    record({}, smol_engine.prefill([spec("fp", prompts[1], max_tokens=4)]))
    assert smol_engine.footprint() > idle
    smol_engine.release(["fp"])
    assert smol_engine.footprint() == idle


def test_incremental_detokenizer_never_splits_a_character(smollm2_dir):
    from transformers import AutoTokenizer

    from llmos.engines.sampling import IncrementalDetokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    text = " Grüße aus Zürich 😀 and 中文字符 done"
    ids = tok.encode(text)
    detok = IncrementalDetokenizer(tok, tok.encode("Say:"))
    pieces = [detok.push(i) for i in ids]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + detok.flush() == text
    assert "" in pieces  # some tokens only completed a character later
