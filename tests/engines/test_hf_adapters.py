"""LoRA adapters on one loaded SmolLM2: mixed batches must equal separate runs."""

from __future__ import annotations

import pytest

from llmos.errors import Conflict, InvalidInput

from .helpers import record, run, run_alone, spec, tokens

PROMPT = "My favourite food is"


@pytest.fixture(scope="module")
def prompt(lora_engine) -> list[int]:
    return lora_engine.encode(PROMPT)


@pytest.mark.slow
def test_mixed_batch_equals_each_alone(lora_engine, prompt):
    specs = [
        spec("base", prompt, max_tokens=8),
        spec("one", prompt, adapter="a1", max_tokens=8),
        spec("two", prompt, adapter="a2", max_tokens=8),
        spec("one-again", prompt[1:], adapter="a1", max_tokens=8),
    ]
    mixed = tokens(run(lora_engine, specs))
    assert mixed == tokens(run_alone(lora_engine, specs))
    assert len({tuple(mixed[k]) for k in ("base", "one", "two")}) == 3  # each adapter changes the output


def test_adapter_rows_join_a_running_batch(lora_engine, prompt):
    alone = tokens(run_alone(lora_engine, [spec("b", prompt, max_tokens=6), spec("x", prompt, "a2", max_tokens=4)]))
    results: dict = {}
    record(results, lora_engine.prefill([spec("b", prompt, max_tokens=6)]))
    record(results, lora_engine.decode(["b"]))
    record(results, lora_engine.prefill([spec("x", prompt, "a2", max_tokens=4)]))
    live = ["b", "x"]
    while live:
        done = record(results, lora_engine.decode(live))
        lora_engine.release(done)
        live = [i for i in live if i not in done]
    assert tokens(results) == alone


def test_unknown_adapter_names_the_loaded_ones(lora_engine, prompt):
    with pytest.raises(InvalidInput, match="loaded adapters: a1, a2"):
        lora_engine.prefill([spec("u", prompt, adapter="a3")])
    assert lora_engine.info().adapters == ["a1", "a2"]


def test_adapter_in_use_cannot_be_removed(lora_engine, prompt):
    record({}, lora_engine.prefill([spec("busy", prompt, adapter="a1", max_tokens=4)]))
    with pytest.raises(Conflict):
        lora_engine.remove_adapter("a1")
    lora_engine.release(["busy"])


def test_bad_adapter_folders(lora_engine, tmp_path):
    with pytest.raises(InvalidInput, match="adapter_config.json"):
        lora_engine.add_adapter("empty", str(tmp_path))
    with pytest.raises(InvalidInput, match="__base__"):
        lora_engine.add_adapter("__base__", str(tmp_path))


def test_removing_all_adapters_restores_the_base(lora_engine, lora_dirs, bad_lora_dir, prompt):
    base_spec = [spec("base", prompt, max_tokens=8)]
    with_adapters = tokens(run(lora_engine, base_spec))
    footprint = lora_engine.footprint()
    lora_engine.remove_adapter("a1")
    lora_engine.remove_adapter("a2")
    assert lora_engine.info().adapters == []
    bare = lora_engine.footprint()
    assert bare < footprint
    assert tokens(run(lora_engine, base_spec)) == with_adapters

    # A failed first load must leave the bare base exactly as it was.
    with pytest.raises(InvalidInput, match="cannot load adapter"):
        lora_engine.add_adapter("bad", str(bad_lora_dir))
    assert lora_engine.info().adapters == []
    assert lora_engine.footprint() == bare  # no LoRA layer left behind
    assert tokens(run(lora_engine, base_spec)) == with_adapters

    for name, path in lora_dirs.items():
        lora_engine.add_adapter(name, str(path))
    lora_engine.add_adapter("a1", str(lora_dirs["a1"]))  # same folder again: a no-op
    with pytest.raises(Conflict):
        lora_engine.add_adapter("a1", str(lora_dirs["a2"]))
    assert lora_engine.footprint() == footprint
    with pytest.raises(InvalidInput, match="cannot load adapter"):  # failing on top of loaded ones
        lora_engine.add_adapter("bad", str(bad_lora_dir))
    assert lora_engine.info().adapters == ["a1", "a2"] and lora_engine.footprint() == footprint
    assert tokens(run(lora_engine, base_spec)) == with_adapters
