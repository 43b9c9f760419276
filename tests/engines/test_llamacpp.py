"""The llama.cpp engine on the built-in SmolLM2 Q4_1 GGUF: greedy text, limits, stops, release."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmos.engines.base import ChatMessage
from llmos.engines.llamacpp import LlamaCppEngine
from llmos.errors import WrongTask
from llmos.kernel.local import stream
from llmos.engines.types import RequestStatus, SamplingParams, SequenceSpec, StepOutput

QUESTION = [ChatMessage("system", "Answer in one short sentence."), ChatMessage("user", "What is the capital of France?")]


@pytest.fixture(scope="module")
def llama(smollm2_dir: Path) -> Iterator[LlamaCppEngine]:
    engine = LlamaCppEngine(smollm2_dir, name="smol-q4", tasks=["generate"], max_batch_size=4,
                            chat_template=(smollm2_dir / "chat_template.jinja").read_text())
    yield engine
    engine.close()


def _collect(engine: LlamaCppEngine, specs: list[SequenceSpec]) -> dict[str, list[StepOutput]]:
    outputs: queue.Queue[StepOutput] = queue.Queue()
    engine.start(specs, outputs.put)
    got: dict[str, list[StepOutput]] = {s.id: [] for s in specs}
    open_ids = {s.id for s in specs}
    while open_ids:
        out = outputs.get(timeout=300)
        got[out.id].append(out)
        if out.finished:
            open_ids.discard(out.id)
    return got


def _text(outs: list[StepOutput]) -> str:
    return "".join(o.text for o in outs)


def _tokens(outs: list[StepOutput]) -> int:
    return sum(o.tokens for o in outs)


def test_greedy_chat_answer_from_the_gguf(llama: LlamaCppEngine) -> None:
    ids = llama.encode_chat(QUESTION)
    got = _collect(llama, [SequenceSpec("a", ids, SamplingParams(max_tokens=24))])["a"]
    assert "Paris" in _text(got)
    assert got[-1].finished and got[-1].status == RequestStatus.FINISHED_STOPPED  # end of turn, not the limit
    assert all(not o.finished for o in got[:-1])


def test_greedy_is_reproducible_and_batched_sequences_each_finish(llama: LlamaCppEngine) -> None:
    prompt = llama.encode("The three primary colours are")
    alone = _text(_collect(llama, [SequenceSpec("x", prompt, SamplingParams(max_tokens=12))])["x"])
    specs = [SequenceSpec(f"b{i}", prompt if i == 0 else llama.encode(f"Count to {i}:"), SamplingParams(max_tokens=12))
             for i in range(3)]
    together = _collect(llama, specs)
    assert _text(together["b0"]) == alone
    for outs in together.values():  # max_tokens counted exactly, even when llama.cpp held text back
        assert _tokens(outs) == 12 and outs[-1].status == RequestStatus.FINISHED_LENGTH


def test_stop_string_ends_the_sequence_without_it(llama: LlamaCppEngine) -> None:
    prompt = llama.encode("1, 2, 3, 4,")
    got = _collect(llama, [SequenceSpec("s", prompt, SamplingParams(max_tokens=30, stop=["7"]))])["s"]
    assert got[-1].status == RequestStatus.FINISHED_STOPPED
    assert "7" not in _text(got) and "6" in _text(got)


def test_release_mid_decode_frees_the_slot_and_silences_it(llama: LlamaCppEngine) -> None:
    outputs: queue.Queue[StepOutput] = queue.Queue()
    llama.start([SequenceSpec("long", llama.encode("Once upon a time"), SamplingParams(max_tokens=2000))], outputs.put)
    first = outputs.get(timeout=300)
    assert first.id == "long" and not first.finished
    llama.release(["long"])
    assert llama.wait_idle(timeout=60)
    late = []
    while not outputs.empty():
        late.append(outputs.get())
    assert len(late) <= 1 and not any(o.finished for o in late)  # at most the token already in flight
    assert llama.live == 0


def test_prompt_over_the_context_fails_that_sequence_only(llama: LlamaCppEngine) -> None:
    too_long = [28] * (llama.context_length + 10)
    got = _collect(llama, [SequenceSpec("big", too_long, SamplingParams(max_tokens=4)),
                           SequenceSpec("ok", llama.encode("Hello"), SamplingParams(max_tokens=4))])
    assert got["big"][-1].status == RequestStatus.FINISHED_ERROR and "context" in (got["big"][-1].error or "")
    assert got["ok"][-1].status == RequestStatus.FINISHED_LENGTH and _tokens(got["ok"]) == 4


def test_per_slot_cells_cap_a_request_at_its_slots_share(smollm2_dir: Path) -> None:
    engine = LlamaCppEngine(smollm2_dir, name="smol-slots", tasks=["generate"], max_batch_size=2, kv_layout="per-slot",
                            kv_tokens=4 * 256 + 100)
    try:
        assert engine.slots == 4 and engine.context_length == 256  # 1,124 cells over 4 slots, in llama.cpp's steps
        assert engine.info().context_length == 256
        too_long = [28] * 300
        got = _collect(engine, [SequenceSpec("big", too_long, SamplingParams(max_tokens=4)),
                                SequenceSpec("ok", engine.encode("Hello"), SamplingParams(max_tokens=4))])
        assert got["big"][-1].status == RequestStatus.FINISHED_ERROR and "context" in (got["big"][-1].error or "")
        assert got["ok"][-1].status == RequestStatus.FINISHED_LENGTH and _tokens(got["ok"]) == 4
    finally:
        engine.close()


def test_cli_stream_and_what_it_refuses(llama: LlamaCppEngine) -> None:
    outs = list(stream(llama, llama.encode("The capital of France is"), SamplingParams(max_tokens=5)))
    assert outs[-1].finished and _tokens(outs) == 5 and _text(outs).strip()
    with pytest.raises(WrongTask):
        llama.embed(["x"])
    with pytest.raises(WrongTask):
        llama.add_adapter("a", "/nowhere")
    assert llama.info().tasks == ["generate"] and llama.footprint() > llama.gguf.stat().st_size
    # llama.cpp's host prompt cache (its default: 8 GiB per context) is bounded and counted
    cache = llama._config.prompt_cache_mib * 2**20  # noqa: SLF001
    assert 0 < cache <= llama._kv_bytes and llama.footprint() >= llama.gguf.stat().st_size + llama._kv_bytes + cache  # noqa: SLF001
