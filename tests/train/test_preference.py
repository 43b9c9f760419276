"""The preference method ``dpo``: planned like any method (refused without pairs, or for a task it cannot
train), run by the one training loop with TRL's DPO loss on a LoRA adapter of the real SmolLM2 and real
code_alpaca pairs, published as an adapter; a diverging loss fails the run before anything is saved."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llmos.data import ImportOptions
from llmos.data.rows import Task
from llmos.errors import InvalidInput
from llmos.train.config import TrainSpec
from llmos.train.job import publish, run_plan
from llmos.train.methods import get_method
from llmos.train.plan import TrainEnv, plan_training
from llmos.train.preference import _divergence_guard, pair_record
from llmos.train.runner import NullReporter
from llmos.train.task_kinds import get_task
from tests.train.conftest import MINILM, SMOL, Home


@pytest.fixture(scope="module")
def pairs_dataset(home: Home, datasets: Path) -> str:
    home.add_builtin(SMOL)
    home.add_builtin(MINILM)
    rows = json.loads((datasets / "code_alpaca_2k/code_alpaca_2k.json").read_text())
    short = [r for r in rows if not r["input"] and len(r["instruction"]) + len(r["output"]) < 120][:20]
    pairs = [{"instruction": r["instruction"], "output": r["output"], "rejected": "I cannot help with that."}
             for r in short[:6]]
    plain = [{"instruction": r["instruction"], "output": r["output"]} for r in short[6:]]
    folder = home.root.parent / "slices"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs + plain))
    (folder / "plain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in plain))
    home.datasets.import_file(folder / "plain.jsonl", "plain", ImportOptions(task="sft"))
    return home.datasets.import_file(folder / "pairs.jsonl", "prefs", ImportOptions(task="sft")).ref


def env(home: Home) -> TrainEnv:
    return TrainEnv(home.rt.store.registry, home.datasets)


def spec(dataset: str, base: str = SMOL, **hp: object) -> TrainSpec:
    return TrainSpec.parse({"base": base, "dataset": dataset, "method": "dpo", "name": "prefs-helper",
                            "hyperparameters": dict(hp)})


def test_dpo_is_refused_without_pairs_or_for_a_classifier(home: Home, pairs_dataset: str) -> None:
    with pytest.raises(InvalidInput, match="no preference pair"):
        plan_training(env(home), spec("plain"))
    with pytest.raises(InvalidInput, match="trains chat models"):  # the method's own check, for a classifier
        get_method("dpo").check(get_task(Task.classify), home.rt.store.registry.get(MINILM))


def test_a_pair_becomes_trls_conversational_record(home: Home, pairs_dataset: str) -> None:
    plan = plan_training(env(home), spec(pairs_dataset))
    record = pair_record(next(r for r in plan.splits.train if r.rejected))
    assert record["prompt"][-1]["role"] == "user" and record["chosen"][0]["role"] == "assistant"
    assert record["rejected"] == [{"role": "assistant", "content": "I cannot help with that."}]


def test_a_diverging_loss_fails_the_run() -> None:
    class State:
        global_step = 3

    guard = _divergence_guard()
    guard.on_log(None, State(), None, logs={"loss": 0.7})  # a finite loss passes
    with pytest.raises(FloatingPointError, match="diverged: loss nan at step 3"):
        guard.on_log(None, State(), None, logs={"loss": math.nan})


@pytest.mark.slow
def test_dpo_trains_a_lora_adapter_in_the_one_loop(home: Home, pairs_dataset: str, tmp_path: Path) -> None:
    plan = plan_training(env(home), spec(pairs_dataset, max_steps=2, batch_size=2, max_length=96, lora_r=4,
                                         report_rows=2, max_new_tokens=8))
    assert plan.method is get_method("dpo") and len(plan.splits.train) >= 16
    result = run_plan(plan, env(home), NullReporter(tmp_path / "ckpt"), tmp_path)
    assert result.kind == "adapter" and (result.folder / "adapter_model.safetensors").is_file()
    assert result.outcome is not None and result.outcome.global_step == 2
    losses = [h["loss"] for h in result.outcome.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert any("rewards/margins" in h for h in result.outcome.log_history)  # TRL's DPO loss ran
    info = publish(home.rt.store.importer, home.rt.store.registry, plan, result, "job-dpo")
    assert info.manifest.kind == "adapter" and info.manifest.lineage.method == "dpo"
    assert info.manifest.chat_template == home.rt.store.registry.get(SMOL).manifest.chat_template
